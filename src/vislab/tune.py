"""`vislab tune STUDY`: hyperparameter search with Optuna over any config key.

    vislab tune cnn --trials 20 --space configs/cnn/tune-q1.yaml --out runs/tune/q1
    vislab tune cnn --trials 20 --space configs/cnn/tune-q1.yaml --out runs/tune/q1 &   # a 2nd worker
    vislab tune cnn --trials 40 --storage postgresql+psycopg://user@db/vislab --study-name q1

Optuna does the search (TPE sampler; median or Hyperband pruning on the per-epoch validation
figure) and keeps the study in a database: a SQLite file in the tune folder by default, or any
SQLAlchemy URL, so several processes or machines run trials of one study at once. Each trial is
a normal run folder under <tune folder>/trials/, made by the same code as `vislab run`. A
worker stops when the study holds --trials complete or pruned trials; failed trials stay in the
study as FAIL, and a trial whose worker was killed is failed by the heartbeat check and retried.

The tune folder:
    study.db       the Optuna study (SQLite, unless --storage names another database)
    trials.csv     one row per trial: number, state, value, parameters, run folder
    best.yaml      the best trial's resolved config: `vislab run STUDY --config best.yaml`
    plots/         optimization_history.png, param_importances.png
    notes.txt      what was skipped and why (e.g. importances need two complete trials)

The search space file (YAML):
    metric: val_acc              # a metrics.csv column; a trial's value is its best epoch
    direction: maximize          # or minimize
    pruner: median               # median, hyperband or none
    fixed: {model_name: Q1_1}    # config values every trial gets
    params:                      # any config key (dotted for nested ones)
      lr: {type: float, low: 0.005, high: 0.2, log: true}
      epochs: {type: int, low: 2, high: 6}
      batch_size: {type: categorical, choices: [32, 64, 128]}
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vislab.errors import VislabError

# The figure each study is tuned on by default: a metrics.csv column and its direction.
DEFAULT_OBJECTIVE = {"cnn": ("val_acc", "maximize"), "faces": ("val_auc", "maximize"),
                     "imbalance": ("dev_macro_f1", "maximize")}
# Searched when no --space is given: the optimiser's two main knobs.
DEFAULT_PARAMS = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
}
SPACE_KEYS = ("metric", "direction", "pruner", "fixed", "params")
TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")
COUNTED = ("COMPLETE", "PRUNED")  # the states that count toward --trials
RACE_ERRORS = ("already exists", "UNIQUE constraint", "duplicate key", "database is locked")


@dataclass
class Space:
    """A parsed search space file."""

    metric: str
    direction: str
    pruner: str
    fixed: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


class SetupError(VislabError):
    """A problem of the whole search (not of one trial's values): stop every trial."""


# ---------------------------------------------------------------------------------------------
# The search space


def load_space(study: str, path: str | None, *, metric: str | None = None, direction: str | None = None,
               pruner: str | None = None) -> Space:
    """The space file (or the default space), with command-line choices winning over it."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise VislabError(f"search space file {file} not found")
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise VislabError(f"{file}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise VislabError(f"{file}: a search space must be a mapping with keys {', '.join(SPACE_KEYS)}")
        unknown = sorted(set(raw) - set(SPACE_KEYS))
        if unknown:
            raise VislabError(f"{file}: unknown key {unknown[0]!r}; a search space has {', '.join(SPACE_KEYS)}")
    where = path or "the default search space"
    default_metric, default_direction = DEFAULT_OBJECTIVE.get(study, (None, "maximize"))
    space = Space(metric=metric or raw.get("metric") or default_metric or "",
                  direction=direction or raw.get("direction") or default_direction,
                  pruner=pruner or raw.get("pruner") or "median",
                  fixed=dict(raw.get("fixed") or {}),
                  params=dict(raw.get("params") or ({} if path else DEFAULT_PARAMS)))
    if not space.metric:
        raise VislabError(f"{study} has no default metric to tune; give `metric:` in the space file or --metric")
    if space.direction not in ("maximize", "minimize"):
        raise VislabError(f"{where}: direction {space.direction!r} is not 'maximize' or 'minimize'")
    if space.pruner not in PRUNERS:
        raise VislabError(f"{where}: pruner {space.pruner!r} is not one of {', '.join(PRUNERS)}")
    if not isinstance(raw.get("fixed", {}) or {}, dict):
        raise VislabError(f"{where}: 'fixed' must be a mapping of config keys to values")
    if not space.params:
        raise VislabError(f"{where}: 'params' is empty; name at least one config key to search")
    for key, spec in space.params.items():
        _check_param(where, key, spec)
    return space


def _check_param(where: str, key: str, spec: object) -> None:
    if not isinstance(spec, dict):
        raise VislabError(f"{where}: params.{key} must be a mapping like {{type: float, low: 0.001, high: 0.1}}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise VislabError(f"{where}: params.{key}: type {kind!r} is not one of {', '.join(TYPES)}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise VislabError(f"{where}: params.{key}: unknown field {extra[0]!r} for type {kind} "
                          f"(fields: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (dict, list)) for c in choices):
            raise VislabError(f"{where}: params.{key}: 'choices' must be a non-empty list of plain values")
        return
    low, high = spec.get("low"), spec.get("high")
    number = int if kind == "int" else (int, float)
    if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool) or isinstance(high, bool):
        raise VislabError(f"{where}: params.{key}: 'low' and 'high' must be {kind} numbers, got {low!r} and {high!r}")
    if not low < high:
        raise VislabError(f"{where}: params.{key}: low {low} must be below high {high}")
    if spec.get("log") and low <= 0:
        raise VislabError(f"{where}: params.{key}: a log scale needs low > 0, got {low}")


def _value_text(value: object) -> str:
    """A value as the right side of a `key=value` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def suggest(trial, space: Space) -> dict[str, Any]:
    """One value per searched key, drawn by the trial's sampler."""
    values = {}
    for key, spec in space.params.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1),
                                            log=bool(spec.get("log", False)))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              step=spec.get("step"), log=bool(spec.get("log", False)))
    return values


def trial_overrides(space: Space, extra: Sequence[str], values: Mapping[str, Any], out: Path) -> list[str]:
    """fixed (space file), then the command line's --key=value, then the trial's values: a key
    set in more than one of them takes the later value (each key is passed once)."""
    from vislab.config import normalise_override

    merged: dict[str, str] = {}
    for item in ([f"{key}={_value_text(value)}" for key, value in space.fixed.items()] + list(extra)
                 + [f"{key}={_value_text(value)}" for key, value in values.items()] + [f"out={out}"]):
        item = normalise_override(item)
        merged[item.partition("=")[0]] = item
    return list(merged.values())


def check_trial_config(study: str, space: Space, yaml_file: str | None, extra: Sequence[str]) -> None:
    """Build the config of the space's corners now, so that an unknown key or a wrong type fails
    before any trial starts."""
    from vislab.config import load_config
    from vislab.studies import get_study

    module = get_study(study)
    for corner in ("low", "high"):
        values = {key: spec["choices"][0 if corner == "low" else -1] if spec["type"] == "categorical"
                  else spec[corner] for key, spec in space.params.items()}
        config = load_config(module.Config, yaml_file=yaml_file,
                             overrides=trial_overrides(space, extra, values, Path("/tmp")))
    if config.devices * config.num_nodes > 1:
        raise VislabError("vislab tune runs each trial in its own process with devices=1; to use more "
                          "processes, start more tune workers on the same --storage")


# ---------------------------------------------------------------------------------------------
# The study


def open_storage(url: str, heartbeat_seconds: int):
    """An Optuna RDB storage with heartbeats: a trial whose worker died (no heartbeat for two
    intervals) is marked FAIL by the next worker that starts a trial, and retried up to twice."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(1, 6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                    grace_period=2 * heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        except ModuleNotFoundError as error:
            raise VislabError(f"storage {url!r} needs the Python package {error.name!r}; install it "
                              "(PostgreSQL: pip install 'vislab[postgres]')") from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's many connection errors mean one thing here
            # Workers started together on a new database race to create its tables and version
            # row (the loser sees "already exists" or a unique-key error); they are there next time.
            if any(text in str(error) for text in RACE_ERRORS) and attempt < 5:
                time.sleep(0.5 * attempt)
                continue
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise VislabError(f"cannot open storage {url!r}: {first[:200]}") from None
    raise AssertionError("unreachable")


def make_pruner(name: str):
    import optuna

    if name == "median":  # prune below the median of earlier trials at the same epoch, once 2 finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":  # successive halving brackets over epochs; the last epoch seen is the budget
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    return optuna.pruners.NopPruner()


def counted_trials(study) -> int:
    import optuna

    states = tuple(getattr(optuna.trial.TrialState, name) for name in COUNTED)
    return len(study.get_trials(deepcopy=False, states=states))


def tune(
    study: str,
    *,
    trials: int,
    space: Space,
    out: Path,
    storage: str | None = None,
    study_name: str | None = None,
    yaml_file: str | None = None,
    extra: Sequence[str] = (),
    heartbeat_seconds: int = 60,
    max_failures: int | None = None,
    seed: int | None = None,
) -> Path:
    """Run trials of `study` until the Optuna study holds `trials` complete or pruned ones (other
    workers' included), then write trials.csv, best.yaml and the plots; returns the tune folder."""
    import optuna

    from vislab.cli import run_study
    from vislab.engine import RunPruned, epoch_hook, log
    from vislab.runs import Run

    if trials < 1:
        raise VislabError(f"--trials {trials}: give at least 1")
    check_trial_config(study, space, yaml_file, extra)
    out = Path(out).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VislabError(f"cannot create {out}: {error.strerror}; choose another --out") from None
    url = storage or f"sqlite:///{out / 'study.db'}"
    name = study_name or f"{study}-tune"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, trials // 3)),
                                         constant_liar=True)  # workers in parallel avoid each other's points
    try:
        search = optuna.create_study(study_name=name, storage=open_storage(url, heartbeat_seconds),
                                     sampler=sampler, pruner=make_pruner(space.pruner),
                                     direction=space.direction, load_if_exists=True)
    except ValueError as error:  # e.g. the stored study has the other direction
        raise VislabError(f"study {name!r} in {url}: {error}") from None

    setup_errors: list[SetupError] = []

    def objective(trial) -> float:
        values = suggest(trial, space)
        log(f"== trial {trial.number}: " + ", ".join(f"{k}={_value_text(v)}" for k, v in values.items()))

        def report(run: Run, row: Mapping[str, float]) -> None:
            trial.set_user_attr("run_dir", str(run.path))
            if space.metric not in row:
                raise SetupError(f"metric {space.metric!r} is not a column of {study}'s epoch rows "
                                 f"({', '.join(k for k in row if k not in ('epoch', 'lr', 'seconds'))}); "
                                 "choose one with --metric")
            trial.report(float(row[space.metric]), step=int(row["epoch"]))
            if trial.should_prune():
                raise RunPruned(f"pruned after epoch {int(row['epoch'])}: {space.metric} {row[space.metric]:.4f}")

        try:
            with epoch_hook(report):
                _, path = run_study(study, overrides=trial_overrides(space, extra, values, out / "trials"),
                                    yaml_file=yaml_file, name=f"trial-{trial.number}")
        except RunPruned as pruned:
            run_dir = trial.user_attrs.get("run_dir")
            if run_dir:
                Run(Path(run_dir)).update_meta(status="pruned", error=None)
            log(f"trial {trial.number} {pruned}")
            raise optuna.TrialPruned(str(pruned)) from None
        except SetupError as error:
            setup_errors.append(error)
            trial.study.stop()
            raise
        trial.set_user_attr("run_dir", str(path))
        return best_value(Run(path), space.metric, space.direction)

    failures = 0
    limit = max_failures if max_failures is not None else max(3, trials)

    def stop_after_failures(search, trial) -> None:
        nonlocal failures
        if trial.state == optuna.trial.TrialState.FAIL:
            failures += 1
            if failures >= limit:
                log(f"tune: {failures} failed trials in this worker; stopping it (see trials.csv)")
                search.stop()

    if counted_trials(search) < trials:
        stop_at_count = optuna.study.MaxTrialsCallback(
            trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in COUNTED))
        search.optimize(objective, n_trials=None, catch=(Exception,), gc_after_trial=True,
                        callbacks=[stop_at_count, stop_after_failures])
    if setup_errors:
        raise setup_errors[0]
    write_outputs(search, study, space, out)
    done = counted_trials(search)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in search.get_trials(deepcopy=False)):
        raise VislabError(f"no trial of study {name!r} completed ({done} pruned, {failures} failed here); "
                          f"see {out / 'trials.csv'} and the trials' meta.json")
    return out


def best_value(run, metric: str, direction: str) -> float:
    """The best epoch's `metric` in a run's metrics.csv (the epoch best.ckpt is taken from)."""
    values = [float(row[metric]) for row in run.metrics() if row.get(metric) not in (None, "")]
    values = [value for value in values if math.isfinite(value)]
    if not values:
        raise VislabError(f"{run.path}/metrics.csv has no finite {metric!r}")
    return max(values) if direction == "maximize" else min(values)


# ---------------------------------------------------------------------------------------------
# Output


def write_outputs(search, study: str, space: Space, out: Path) -> None:
    """trials.csv, best.yaml and the plots, from the study in the storage (all workers' trials)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from vislab.engine import log
    from vislab.runs import Run

    folder = Run(out)  # the run-folder writer: atomic files, plots saved and closed
    trials = search.get_trials(deepcopy=False)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # retried_trial_number
        for trial in trials:
            retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
            rows.append({"number": trial.number, "state": trial.state.name,
                         "value": "" if trial.value is None else trial.value,
                         **{f"params_{key}": value for key, value in trial.params.items()},
                         "epochs": max(trial.intermediate_values, default=""),
                         "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else "",
                         "retry_of": "" if retry_of is None else retry_of,
                         "run_dir": trial.user_attrs.get("run_dir", "")})
    folder.write_csv("trials.csv", rows)
    notes = []
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = search.best_trial
        config = yaml.safe_load((Path(best.user_attrs["run_dir"]) / "config.yaml").read_text())
        config.pop("out", None)  # the trial's folder under the tune folder; a rerun goes to the default
        header = (f"# best trial {best.number} of study {search.study_name!r}: {space.metric} {best.value:.6g} "
                  f"({space.direction}), {len(complete)} complete trials\n"
                  f"# vislab run {study} --config best.yaml\n")
        folder.write_text("best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    else:
        notes.append("best.yaml not written: no trial completed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
        from optuna.visualization import matplotlib as optuna_plots

        if complete:
            folder.plot("optimization_history", optuna_plots.plot_optimization_history(search).figure)
        if len(complete) >= 2:
            try:
                folder.plot("param_importances", optuna_plots.plot_param_importances(search).figure)
            except (ValueError, RuntimeError) as error:  # e.g. every complete trial had the same values
                notes.append(f"param_importances.png not drawn: {str(error).splitlines()[0]}")
        else:
            notes.append(f"param_importances.png not drawn: it needs at least 2 complete trials, "
                         f"the study has {len(complete)}")
    folder.write_text("notes.txt", "".join(note + "\n" for note in notes))
    for note in notes:
        log(f"tune: {note}")
    counts = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    log("tune: " + ", ".join(f"{count} {state.lower()}" for state, count in counts.items())
        + (f"; best {space.metric} {search.best_value:.4f} (trial {search.best_trial.number})" if complete else ""))


def read_trials(out: Path) -> list[dict[str, str]]:
    """trials.csv as rows (for tests and scripts)."""
    return list(csv.DictReader(io.StringIO((Path(out) / "trials.csv").read_text())))
