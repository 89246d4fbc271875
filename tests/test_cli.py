"""The `vislab` command on built-in data: run folder contents, non-TTY output, errors, resume."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vislab.cli import main, run_study

TINY = ["--data-root=builtin", "--model-name=Q1_1", "--epochs=2", "--batch-size=32", "--num-threads=1"]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """One tiny cnn run through the real command line, in a subprocess with no TTY."""
    out = tmp_path_factory.mktemp("runs")
    done = subprocess.run([sys.executable, "-m", "vislab", "run", "cnn", *TINY, f"--out={out}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_last_stdout_line_is_the_run_folder_with_every_file(cnn_run):
    from pathlib import Path

    run_dir = Path(cnn_run.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent.name == "cnn"
    for name in ("config.yaml", "meta.json", "metrics.csv", "summary.json", "report.html",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "plots/curves.png"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["seed"] == 0 and meta["num_threads"] == 1
    assert {"vislab_version", "torch_version", "git_commit", "command", "started_at", "ended_at",
            "wall_seconds"} <= set(meta)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"lr", "train_loss", "val_loss", "val_acc", "seconds"} <= set(rows[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"model_name", "params", "macs", "test_accuracy", "best_val_accuracy", "best_epoch",
            "per_class_accuracy", "seconds_per_epoch"} <= set(summary)
    assert summary["params"] == 62006 and 0 <= summary["test_accuracy"] <= 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == 2
    assert str(summary["params"]) in (run_dir / "report.html").read_text().replace(",", "")


def test_no_tty_means_one_line_per_epoch(cnn_run):
    epoch_lines = [line for line in cnn_run.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    pattern = r"epoch 1/2  train_loss \d+\.\d{4}  train_acc \d\.\d{4}  val_loss \d+\.\d{4}  val_acc \d\.\d{4}  lr \d\.\de[-+]\d\d  \d+\.\d s"
    assert re.fullmatch(pattern, epoch_lines[0]), epoch_lines[0]
    assert "\r" not in cnn_run.stderr  # no progress bar redraws in a log file


def test_unknown_key_exits_2_with_one_line_and_leaves_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vislab", "run", "cnn", "--no-such-key=1", f"--out={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unknown config key 'no_such_key'" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["run", "cnn", "--model-name=Q1_99"], "unknown model 'Q1_99'"),
    (["run", "cnn", "--epochs=0"], "must be at least 1"),
    (["run", "cnnn"], "did you mean: cnn"),
    (["eval", "cnn", "--checkpoint=/nonexistent.ckpt"], "not found"),
    (["report", "/nonexistent"], "not a vislab run folder"),
])
def test_bad_input_is_exit_2(argv, message, capsys, tmp_path):
    assert main([*argv, f"--out={tmp_path}"] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.rglob("config.yaml"))


def test_missing_real_data_names_what_to_do(capsys, tmp_path):
    assert main(["run", "cnn", f"--data-root={tmp_path}", f"--out={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "cifar10-jpeg" in err and "--data-root" in err
    assert not (tmp_path / "runs" / "cnn").exists() or not any((tmp_path / "runs" / "cnn").iterdir())


def test_eval_config_models_and_report(cnn_run, capsys, tmp_path):
    from pathlib import Path

    run_dir = Path(cnn_run.stdout.strip().splitlines()[-1])
    assert main(["eval", "cnn", f"--checkpoint={run_dir / 'checkpoints' / 'best.ckpt'}", f"--out={tmp_path}"]) == 0
    eval_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    trained = json.loads((run_dir / "summary.json").read_text())
    evaluated = json.loads((eval_dir / "summary.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(trained["test_accuracy"])

    assert main(["config", "cnn"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model_name"]
    assert main(["models", "--study", "cnn", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {"name": "Q1_1", "params": "62006"}.items() <= rows[0].items()
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(tmp_path, monkeypatch):
    import vislab.engine as engine

    overrides = ["data_root=builtin", "model_name=Q1_1", "epochs=3", "batch_size=32", "num_threads=1", f"out={tmp_path}"]
    _, straight = run_study("cnn", overrides=overrides)

    real_log = engine.log

    def interrupt_after_epoch_2(message: str) -> None:
        real_log(message)
        if message.startswith("epoch 2/3"):
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "log", interrupt_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_study("cnn", overrides=overrides, name="interrupted")
    monkeypatch.setattr(engine, "log", real_log)
    interrupted = next(p for p in (tmp_path / "cnn").iterdir() if p.name.endswith("interrupted"))
    assert json.loads((interrupted / "meta.json").read_text())["status"] == "interrupted"

    _, resumed = run_study("cnn", resume_dir=str(interrupted))
    assert resumed == interrupted

    def table(path):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader((path / "metrics.csv").open())]

    assert table(resumed) == table(straight)
    assert len(table(resumed)) == 3
    a, b = (json.loads((p / "summary.json").read_text()) for p in (straight, resumed))
    assert a["test_accuracy"] == b["test_accuracy"]


def test_resume_with_other_epochs_is_refused_and_leaves_the_run_as_it_was(tmp_path, capsys):
    """The one-cycle schedule is built for the run's epochs: more would step past its end."""
    assert main(["run", "cnn", "--data-root=builtin", "--model-name=Q1_1", "--epochs=1", "--train-limit=200",
                 "--num-threads=1", f"--out={tmp_path}"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "meta.json", "metrics.csv")}
    assert main(["run", "cnn", "--resume", str(run_dir), "--epochs=2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"vislab: error: --resume continues {run_dir} as configured, for 1 epochs (its learning-rate "
                     "schedule is built for them); to train for 2, start a new run"]
    assert {name: (run_dir / name).read_bytes() for name in before} == before
