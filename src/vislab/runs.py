"""The run folder: the only code that writes into one, every file written atomically.

    runs/<study>/<UTC time>-<name>/
      config.yaml     the resolved config
      meta.json       versions, seed, threads, command line, times, status
      metrics.csv     one row per epoch
      summary.json    the final metrics, under the names each study fixes
      checkpoints/    last.ckpt, best.ckpt: one dict each (model, optimizer, ..., config)
      plots/          PNG figures
      tables/         CSV tables a study adds (comparisons, per-class figures)
      report.html     built from the files above only (vislab.analysis.report)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vislab import __version__
from vislab.errors import VislabError

CHECKPOINTS = "checkpoints"
PLOTS = "plots"
TABLES = "tables"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one,
    never half of one: temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise VislabError(f"cannot write {path}: {error.strerror or error}; "
                              "free some disk space or choose another --out") from None
        raise


def is_writer() -> bool:
    """Whether this process writes run folders: in a distributed run only rank 0 does, the
    others compute the same figures and leave the files to it."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


def _json_default(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite(value: object) -> object:
    """JSON has no NaN/Inf: write them as null rather than produce an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_json(obj: object) -> str:
    return json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def git_commit() -> str | None:
    """The commit of the source tree vislab runs from, with '-dirty' when it has changes."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Run:
    """A run folder. `Run.create` makes a new one; `Run.open` reads an existing one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._started = time.time()
        self.metric_listeners: list = []  # called with each metrics row (e.g. a TensorBoard writer)

    # -- making and opening ------------------------------------------------------------------

    @classmethod
    def create(cls, out: str | Path, study: str, name: str) -> Run:
        """A new folder `<out>/<study>/<UTC time>-<name>[-N]`. `mkdir` without exist_ok is
        atomic, so two runs started in the same second get different folders."""
        parent = Path(out) / study
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VislabError(f"cannot create {parent}: {error.strerror}; choose another --out") from None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:60]
        for attempt in range(1, 1000):
            path = parent / (f"{stamp}-{safe_name}" + (f"-{attempt}" if attempt > 1 else ""))
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise VislabError(f"cannot find a free run folder name under {parent}")

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run folder (for --resume, eval, report, compare)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise VislabError(f"{path} is not a vislab run folder (no config.yaml); "
                              "pass a folder that `vislab run` printed")
        return cls(path)

    @property
    def study(self) -> str:
        return self.path.parent.name

    # -- files -----------------------------------------------------------------------------------

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        if is_writer():
            atomic_write(path, text.encode())
        return path

    def write_json(self, name: str, obj: object) -> Path:
        return self.write_text(name, dumps_json(obj))

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise VislabError(f"{path} is missing; the run may not have finished") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise VislabError(f"{path} is not valid JSON ({error}); the run folder is damaged") from None

    def write_csv(self, name: str, rows: Sequence[Mapping[str, object]]) -> Path:
        columns: list[str] = []
        for row in rows:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key, "")) for key in columns})
        return self.write_text(name, buffer.getvalue())

    def read_csv(self, name: str) -> list[dict[str, str]]:
        path = self.path / name
        if not path.is_file():
            return []
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        except (csv.Error, UnicodeDecodeError, OSError) as error:
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            raise VislabError(f"{path} is not a readable CSV table ({reason}); the run folder is damaged") from None

    # -- the standard files ----------------------------------------------------------------------

    def write_config(self, config_yaml: str) -> None:
        self.write_text("config.yaml", config_yaml)

    def start_meta(self, *, seed: int, study: str, extra: Mapping[str, object] = {}) -> None:
        self.write_json("meta.json", {
            "study": study,
            "status": "running",
            "vislab_version": __version__,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "num_threads": torch.get_num_threads(),
            "seed": seed,
            "command": " ".join(sys.argv),
            "started_at": utc_now(),
            **extra,
        })

    def update_meta(self, **fields: object) -> None:
        meta = self.read_json("meta.json") if (self.path / "meta.json").exists() else {}
        meta.update(fields)
        self.write_json("meta.json", meta)

    def finish_meta(self, status: str, **fields: object) -> None:
        """status: 'completed', 'failed' or 'interrupted'."""
        self.update_meta(status=status, ended_at=utc_now(),
                         wall_seconds=round(time.time() - self._started, 2), **fields)

    def append_metrics(self, row: Mapping[str, object]) -> None:
        """Add one epoch's row (the file is rewritten whole, atomically: it is small)."""
        rows = self.read_csv("metrics.csv")
        rows.append(dict(row))
        self.write_csv("metrics.csv", rows)
        for listener in self.metric_listeners:
            listener(row)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (resuming from a checkpoint taken at that epoch)."""
        rows = [row for row in self.read_csv("metrics.csv") if int(row["epoch"]) <= last_epoch]
        self.write_csv("metrics.csv", rows)

    def metrics(self) -> list[dict[str, str]]:
        return self.read_csv("metrics.csv")

    def write_summary(self, summary: Mapping[str, object]) -> None:
        self.write_json("summary.json", summary)

    def summary(self) -> dict[str, Any]:
        return self.read_json("summary.json")

    def table(self, name: str, rows: Sequence[Mapping[str, object]]) -> Path:
        """A CSV table the report shows (e.g. per-class accuracy, a comparison)."""
        return self.write_csv(f"{TABLES}/{name}.csv", rows)

    def plot(self, name: str, figure: Any) -> Path:
        """Save a matplotlib figure as plots/<name>.png and close it."""
        import matplotlib.pyplot as plt

        path = self.path / PLOTS / f"{name}.png"
        if not is_writer():
            plt.close(figure)
            return path
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        atomic_write(path, buffer.getvalue())
        return path

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_path(self, name: str) -> Path:
        return self.path / CHECKPOINTS / name

    def save_checkpoint(self, name: str, state: Mapping[str, object]) -> Path:
        path = self.checkpoint_path(name)
        if not is_writer():
            return path
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        atomic_write(path, buffer.getvalue())
        return path

    def remove_partial_files(self) -> list[Path]:
        """Delete the temporary files of writes a killed process never finished (atomic_write's
        `.NAME.*.tmp`); the files they were meant to replace are still whole."""
        removed = sorted(self.path.rglob(".*.tmp"))
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def has_checkpoint(self) -> bool:
        return any((self.path / CHECKPOINTS).glob("*.ckpt"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict, loaded with weights_only=True: tensors and plain containers only,
    so a file built to run code when unpickled is refused, never executed."""
    path = Path(path)
    if path.is_dir():  # a run folder: take its best checkpoint
        path = path / CHECKPOINTS / "best.ckpt"
    if not path.is_file():
        raise VislabError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it holds objects other than tensors and plain data, so it was refused unread"
        raise VislabError(f"cannot load checkpoint {path}: {reason[:200]}") from None
    if not isinstance(state, dict):
        raise VislabError(f"checkpoint {path} is not a dict (got {type(state).__name__}); "
                          "is it a vislab checkpoint?")
    return state


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
