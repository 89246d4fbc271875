"""vislab: a laboratory for small-image deep-learning studies.

    import vislab
    summary, run_dir = vislab.run("cnn", model_name="Q1_4", epochs=15)
    run = vislab.load_run(run_dir)    # its config, metrics table, summary and figures
"""

__version__ = "0.1.0"


def run(study: str, **overrides: object):
    """Train and evaluate `study` with config overrides; returns (summary dict, run folder).

    Writes the same run folder as `vislab run STUDY --key=value ...`.
    """
    from vislab.cli import run_study

    return run_study(study, overrides=[f"{key}={_yaml_value(value)}" for key, value in overrides.items()])


def load_run(path):
    """An existing run folder: `.config`, `.summary`, `.metrics` (rows), `.plots` (paths)."""
    from vislab.analysis.report import RunFiles

    return RunFiles.read(path)


def _yaml_value(value: object) -> str:
    import json

    return json.dumps(value) if isinstance(value, (list, tuple, dict, bool)) or value is None else str(value)
