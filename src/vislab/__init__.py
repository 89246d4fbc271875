"""vislab: a laboratory for small-image deep-learning studies.

    import vislab
    summary, run_dir = vislab.run("cnn", model_name="Q1_4", epochs=15)
    run = vislab.load_run(run_dir)    # its config, metrics table, summary and figures
"""

import os

__version__ = "0.1.0"

# OpenMP threads that finish early spin-wait for the rest by default. On a shared or busy CPU that
# spinning steals the cores the other threads need: measured here, a 2-thread training step took
# 10.1 s under load with the default policy and 1.05 s with PASSIVE (same figure on an idle
# machine). Set before torch loads its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(study: str, **overrides: object):
    """Train and evaluate `study` with config overrides; returns (summary dict, run folder).

    Writes the same run folder as `vislab run STUDY --key=value ...`.
    """
    from vislab.cli import run_study

    return run_study(study, overrides=[f"{key}={_yaml_value(value)}" for key, value in overrides.items()])


def load_run(path):
    """An existing run folder: `.config`, `.summary`, `.metrics` (rows), `.plots` (paths), `.tables`."""
    from vislab.analysis.report import RunFiles

    return RunFiles.read(path)


def _yaml_value(value: object) -> str:
    import json

    return json.dumps(value) if isinstance(value, (list, tuple, dict, bool)) or value is None else str(value)
