"""`vislab tune`: tiny Optuna searches of the cnn study on built-in data.

Workers are real processes sharing one SQLite file, as on a cluster sharing a database; one of
them is killed with SIGKILL mid-trial to check that the study still completes its trial count.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vislab.cli import main
from vislab.tune import read_trials

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds per worker process: generous, CI machines run other jobs
TINY = ["--data-root=builtin", "--model-name=Q1_1", "--epochs=2", "--train-limit=200", "--num-threads=1"]
SPACE = {"metric": "val_acc", "direction": "maximize", "pruner": "none",
         "params": {"lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
                    "batch_size": {"type": "categorical", "choices": [16, 32]}}}


def _space(tmp_path: Path, space: dict = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _worker(space: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    given = {arg.split("=", 1)[0] for arg in args}  # a key given twice is an error: args override TINY
    tiny = [arg for arg in TINY if arg.split("=", 1)[0] not in given]
    return subprocess.Popen([sys.executable, "-m", "vislab", "tune", "cnn", f"--space={space}", f"--out={out}",
                             *args, *tiny], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _load_study(out: Path):
    import optuna

    return optuna.load_study(study_name="cnn-tune", storage=f"sqlite:///{out / 'study.db'}")


def _states(out: Path) -> list[str]:
    return [row["state"] for row in read_trials(out)]


def test_tiny_tune_writes_trials_best_yaml_and_plots_and_best_yaml_runs(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "cnn", "--trials=3", f"--space={_space(tmp_path)}", f"--out={out}", *TINY]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    rows = read_trials(out)
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert all(Path(row["run_dir"], "metrics.csv").is_file() for row in rows)  # each trial: a run folder
    assert len(list((out / "trials" / "cnn").iterdir())) == 3
    assert (out / "plots" / "optimization_history.png").stat().st_size > 1000
    assert (out / "plots" / "param_importances.png").stat().st_size > 1000
    best_row = max(rows, key=lambda row: float(row["value"]))
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["lr"] == pytest.approx(float(best_row["params_lr"]), rel=1e-5)
    assert best["batch_size"] == int(best_row["params_batch_size"]) and "out" not in best

    assert main(["run", "cnn", f"--config={out / 'best.yaml'}", f"--out={tmp_path / 'rerun'}"]) == 0
    rerun = Path(capsys.readouterr().out.strip().splitlines()[-1])
    config = yaml.safe_load((rerun / "config.yaml").read_text())
    assert config["lr"] == best["lr"] and config["model_name"] == "Q1_1"


def test_an_epoch_hook_prunes_a_trial_and_keeps_its_run_folder(tmp_path, monkeypatch):
    """The per-epoch validation figure reaches the pruner; a pruned trial counts toward --trials."""
    import optuna

    import vislab.tune

    seen: list[tuple[int, int, float]] = []

    class PruneSecondTrialAfterOneEpoch(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            step = trial.last_step
            seen.append((trial.number, step, trial.intermediate_values[step]))
            return trial.number == 1 and step >= 1

    monkeypatch.setattr(vislab.tune, "make_pruner", lambda name: PruneSecondTrialAfterOneEpoch())
    out = tmp_path / "tune"
    assert main(["tune", "cnn", "--trials=2", f"--space={_space(tmp_path)}", f"--out={out}", *TINY]) == 0
    rows = read_trials(out)
    assert [row["state"] for row in rows] == ["COMPLETE", "PRUNED"]
    assert [(number, step) for number, step, _ in seen] == [(0, 1), (0, 2), (1, 1)]
    pruned_run = Path(rows[1]["run_dir"])
    assert len((pruned_run / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1 only
    assert yaml.safe_load((pruned_run / "meta.json").read_text())["status"] == "pruned"
    with (Path(rows[0]["run_dir"]) / "metrics.csv").open(newline="") as handle:
        first_val_acc = float(next(csv.DictReader(handle))["val_acc"])
    assert seen[0][2] == pytest.approx(first_val_acc, abs=1e-5)  # the reported value is the epoch's val_acc


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    space, out = _space(tmp_path), tmp_path / "shared"
    workers = [_worker(space, out, "--trials=4") for _ in range(2)]
    outputs = [worker.communicate(timeout=TIMEOUT) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-2000:]
        assert "== trial" in stderr  # both workers ran trials of the one study
    states = [trial.state.name for trial in _load_study(out).trials]
    # 4 counted; at most one more, started by a worker while the other finished the 4th
    # (separate studies would have made 8)
    assert 4 <= states.count("COMPLETE") + states.count("PRUNED") <= 5 and len(states) <= 5
    numbers = [int(row["number"]) for row in read_trials(out)]
    assert numbers == sorted(set(numbers)) and len(numbers) == len(states)


@pytest.mark.slow
def test_a_study_killed_mid_trial_resumes_fails_the_lost_trial_and_completes(tmp_path):
    import optuna

    space, out = _space(tmp_path), tmp_path / "killed"
    args = ("--trials=3", "--heartbeat=1", "--epochs=4")  # a 1 s heartbeat: stale after 2 s
    first = _worker(space, out, *args)
    deadline = time.monotonic() + TIMEOUT
    killed = None
    while killed is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
        if not (out / "study.db").exists():
            continue
        try:
            trials = _load_study(out).trials
        except Exception:  # noqa: BLE001 - the worker is still creating the database or the study
            continue
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values]
        if complete and running:  # one trial done, the next one mid-way
            first.send_signal(signal.SIGKILL)
            killed = running[0].number
    first.communicate(timeout=60)
    assert killed is not None, "the first worker finished before it could be killed"
    time.sleep(3)  # past the 2 s grace period: the killed trial's heartbeat is stale

    second = _worker(space, out, *args)
    _, stderr = second.communicate(timeout=TIMEOUT)
    assert second.returncode == 0, stderr[-2000:]
    rows = {int(row["number"]): row for row in read_trials(out)}
    assert rows[killed]["state"] == "FAIL"  # recorded, not lost, not left RUNNING
    retries = [row for row in rows.values() if row["retry_of"] == str(killed)]
    assert len(retries) == 1 and retries[0]["params_lr"] == rows[killed]["params_lr"]
    assert sum(row["state"] in ("COMPLETE", "PRUNED") for row in rows.values()) >= 3


def test_failing_trials_are_recorded_as_fail(tmp_path, capsys):
    """batch_size larger than the 200 training images: every trial fails, and says so."""
    space = {**SPACE, "params": {"batch_size": {"type": "categorical", "choices": [4096]}}}
    out = tmp_path / "failing"
    assert main(["tune", "cnn", "--trials=1", "--max-failures=2", f"--space={_space(tmp_path, space)}",
                 f"--out={out}", *TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("vislab: error: no trial of study 'cnn-tune' completed")
    assert _states(out) == ["FAIL", "FAIL"]
    assert [trial.state.name for trial in _load_study(out).trials] == ["FAIL", "FAIL"]
    assert "best.yaml not written" in (out / "notes.txt").read_text()


@pytest.mark.parametrize("space, message", [
    ({"params": {"lr": {"type": "gaussian", "low": 0.1, "high": 1}}}, "type 'gaussian' is not one of"),
    ({"params": {"lr": {"type": "float", "low": 0.5, "high": 0.1}}}, "low 0.5 must be below high 0.1"),
    ({"params": {"lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}}, "a log scale needs low > 0"),
    ({"params": {"lrr": {"type": "float", "low": 0.1, "high": 0.2}}}, "unknown config key 'lrr'"),
    ({"params": {"epochs": {"type": "categorical", "choices": ["many"]}}}, "config key 'epochs'"),
    ({"params": {}}, "'params' is empty"),
    ({"metric": "val_acc", "sampler": "grid", "params": {"lr": {"type": "float", "low": 0.1, "high": 0.2}}},
     "unknown key 'sampler'"),
    ({"direction": "up", "params": {"lr": {"type": "float", "low": 0.1, "high": 0.2}}}, "direction 'up'"),
])
def test_bad_space_file_is_one_line_and_exit_2(tmp_path, capsys, space, message):
    out = tmp_path / "bad"
    assert main(["tune", "cnn", "--trials=2", f"--space={_space(tmp_path, space)}", f"--out={out}", *TINY]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and message in error, error
    assert not out.exists()  # nothing started, nothing written


def test_space_file_that_is_not_yaml_or_missing_is_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("params: [unclosed\n")
    assert main(["tune", "cnn", "--trials=1", f"--space={broken}"]) == 2
    assert main(["tune", "cnn", "--trials=1", f"--space={tmp_path / 'absent.yaml'}"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "not valid YAML" in errors[0] and "not found" in errors[1]


def test_example_space_file_loads():
    from vislab.tune import check_trial_config, load_space

    space = load_space("cnn", str(REPO / "configs" / "cnn" / "tune-q1.yaml"))
    assert space.metric == "val_acc" and set(space.params) >= {"lr", "batch_size"}
    check_trial_config("cnn", space, None, ["data_root=builtin"])


def test_command_line_values_override_the_space_files_fixed_ones_and_each_key_is_passed_once():
    from vislab.tune import Space, trial_overrides

    space = Space(metric="val_acc", direction="maximize", pruner="none",
                  fixed={"model_name": "Q1_1", "epochs": 4}, params={})
    overrides = trial_overrides(space, ["--epochs=2", "--model-name=Q1_1"], {"lr": 0.1}, Path("/tmp/t"))
    assert overrides == ["model_name=Q1_1", "epochs=2", "lr=0.1", "out=/tmp/t"]
