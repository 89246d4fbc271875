"""The studies, one module each. A study module defines:

    Config                      a frozen dataclass extending vislab.config.CommonConfig
    run_name(cfg) -> str        the short name in its run folder's name
    run(cfg, run, resume=None)  trains, evaluates, writes summary/plots/tables; returns the summary
    evaluate(cfg, checkpoint, run) -> dict   evaluation only, from a checkpoint dict
    DEMO: dict                  overrides for `vislab demo` (built-in data, seconds of work)

`vislab run STUDY` finds it here by name; a study whose module is not written yet is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from vislab.errors import VislabError, did_you_mean

STUDIES = ("faces", "imbalance", "latent", "cnn")


def available_studies() -> list[str]:
    return [name for name in STUDIES if importlib.util.find_spec(f"{__name__}.{name}") is not None]


def get_study(name: str) -> ModuleType:
    if name not in available_studies():
        raise VislabError(f"unknown study {name!r}{did_you_mean(name, available_studies())} "
                          f"(studies: {', '.join(available_studies())})")
    return importlib.import_module(f"{__name__}.{name}")
