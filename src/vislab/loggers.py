"""Optional metric loggers beside metrics.csv: `--logger=tensorboard` writes each epoch's row
to <run>/tensorboard with torch.utils.tensorboard (needs the tensorboard package)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from typing import Any

from vislab.errors import VislabError
from vislab.runs import Run


def check_logger(config: Any) -> None:
    """Fail before any work when the chosen logger cannot be used."""
    if config.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise VislabError("--logger=tensorboard needs the tensorboard package, which is not installed: "
                          "pip install tensorboard (or run with --logger=none)")


@contextlib.contextmanager
def attach_logger(run: Run, config: Any) -> Iterator[None]:
    """While the run trains, every metrics row also goes to the configured logger."""
    if config.logger != "tensorboard":
        yield
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def write(row: Mapping[str, object]) -> None:
        step = int(float(row["epoch"]))  # type: ignore[arg-type]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, float(value), step)
        writer.flush()  # a user watching TensorBoard sees each epoch as it ends

    run.metric_listeners.append(write)
    try:
        yield
    finally:
        run.metric_listeners.remove(write)
        writer.close()
