"""Crashes and resume: nothing a run has finished is lost.

- SIGKILL mid-epoch (cnn and faces), and SIGKILL between writing a checkpoint's temporary file
  and renaming it: `--resume` ends with the same metrics.csv (metric columns) and summary as an
  uninterrupted run with the same seed (deterministic=true, built-in data);
- Ctrl-C (a real SIGINT) stops after the current step, keeps last.ckpt, says how to resume;
- a NaN/Inf loss stops with a message naming the step, keeps the last good checkpoint, and
  marks the run failed in meta.json (a forced NaN/Inf, and a learning rate that really diverges);
- two runs started in the same second get separate folders (two processes, and two runs);
- a full disk (ENOSPC from a mocked fsync) is a one-line error and the last checkpoint stays valid.

A killed run is `vislab run` (cli.main) in a child process forked from this one (no second
torch start-up, which costs 5-15 s on a busy machine) that SIGKILLs itself at a chosen step,
so "mid-epoch" is exact, not a race with a timer. Reference and resumed runs run here.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from vislab.cli import main, run_study
from vislab.runs import load_checkpoint

CNN = ["data_root=builtin", "model_name=Q1_1", "epochs=3", "batch_size=64", "num_threads=1", "deterministic=true"]
FACES = ["data_root=builtin", "epochs=3", "batch_size=16", "pairs_per_epoch=0", "image_size=24", "crop=160",
         "widths=[8,16,32,64]", "embedding_dim=32", "oneshot_trials=50", "show_pairs=4", "num_threads=1",
         "deterministic=true"]
STUDIES = {"cnn": CNN, "faces": FACES}
NOT_COMPARED = {"seconds", "train_minutes", "train_cpu_minutes", "seconds_per_epoch", "train_seconds",
                "train_cpu_seconds"}  # timing, not results


def _wrap_step(monkeypatch, epoch: int, wrap) -> None:
    """Replace the training step of epoch `epoch` by `wrap(training_step, count)`, where `count`
    is the step's number within the epoch (1-based)."""
    import vislab.engine as engine

    real = engine.train_one_epoch

    def train_one_epoch(fabric, model, optimizer, batches, training_step, **kwargs):
        if not kwargs.get("description", "").startswith(f"epoch {epoch}/"):
            return real(fabric, model, optimizer, batches, training_step, **kwargs)
        count = 0

        def wrapped(model, batch):
            nonlocal count
            count += 1
            return wrap(training_step, count)(model, batch)

        return real(fabric, model, optimizer, batches, wrapped, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)


def _act_at(monkeypatch, epoch: int, step: int, action) -> None:
    """`action()` runs just before step `step` of epoch `epoch`."""

    def wrap(training_step, count):
        if count == step:
            action()
        return training_step

    _wrap_step(monkeypatch, epoch, wrap)


def _kill_at_rename(monkeypatch, count: int) -> None:
    """SIGKILL just before the `count`-th rename of last.ckpt: its new version is written and
    fsynced under a temporary name, not yet in place."""
    import vislab.runs as runs

    real, renames = os.replace, []

    def replace(source, target):
        if str(target).endswith("last.ckpt"):
            renames.append(target)
            if len(renames) == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(source, target)

    monkeypatch.setattr(runs.os, "replace", replace)


def _child(argv: list[str], epoch: int, step: int, at_checkpoint: bool) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        if at_checkpoint:
            _kill_at_rename(monkeypatch, epoch)
        else:
            _act_at(monkeypatch, epoch, step, lambda: os.kill(os.getpid(), signal.SIGKILL))
        os._exit(main(argv))


@pytest.fixture(autouse=True)
def _restore_global_torch_state():
    """deterministic=true switches torch to deterministic algorithms process-wide: undo it."""
    yield
    torch.use_deterministic_algorithms(False)


def table(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in NOT_COMPARED} for row in csv.DictReader(handle)]


def figures(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in NOT_COMPARED}


def killed_run(study: str, out: Path, *, epoch: int, step: int = 0, at_checkpoint: bool = False):
    """`vislab run STUDY` in a forked child that SIGKILLs itself at step `step` of epoch
    `epoch`, or at that epoch's rename of last.ckpt; returns (exit code, run folder)."""
    import multiprocessing

    argv = ["run", study, *(f"--{item}" for item in STUDIES[study]), f"--out={out}"]
    child = multiprocessing.get_context("fork").Process(target=_child, args=(argv, epoch, step, at_checkpoint))
    child.start()
    child.join(timeout=300)
    (run,) = (out / study).iterdir()
    return child.exitcode, run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run per study, the same configs and seed."""
    out = tmp_path_factory.mktemp("reference")
    runs = {study: run_study(study, overrides=[*overrides, f"out={out}"])[1] for study, overrides in STUDIES.items()}
    torch.use_deterministic_algorithms(False)
    return runs


@pytest.mark.parametrize("study, step", [("cnn", 4), ("faces", 3)])
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_metrics(reference, tmp_path, study, step):
    exitcode, run = killed_run(study, tmp_path, epoch=2, step=step)
    assert exitcode == -signal.SIGKILL
    assert [row["epoch"] for row in table(run)] == ["1"]  # killed during epoch 2
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert json.loads((run / "meta.json").read_text())["status"] == "running"  # it never knew

    _, resumed = run_study(study, resume_dir=str(run))
    assert resumed == run
    assert table(resumed) == table(reference[study]) and len(table(resumed)) == 3
    assert figures(resumed) == figures(reference[study])
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"


def test_sigkill_between_checkpoint_write_and_rename_keeps_the_previous_one(reference, tmp_path):
    exitcode, run = killed_run("cnn", tmp_path, epoch=2, at_checkpoint=True)
    assert exitcode == -signal.SIGKILL
    leftovers = list((run / "checkpoints").glob(".last.ckpt.*.tmp"))
    assert len(leftovers) == 1  # epoch 2's checkpoint, complete but never renamed into place
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1  # the previous one, intact

    _, resumed = run_study("cnn", resume_dir=str(run))
    assert table(resumed) == table(reference["cnn"])
    assert figures(resumed) == figures(reference["cnn"])
    assert not list(run.rglob("*.tmp"))  # resume cleared the partial file


def test_ctrl_c_stops_after_the_step_keeps_last_ckpt_and_says_how_to_resume(reference, tmp_path, monkeypatch,
                                                                           capsys):
    with monkeypatch.context() as patch:
        _act_at(patch, 2, 4, lambda: os.kill(os.getpid(), signal.SIGINT))  # a real SIGINT, as Ctrl-C sends
        assert main(["run", "cnn", *(f"--{item}" for item in CNN), f"--out={tmp_path}"]) == 130
    err = capsys.readouterr().err
    (run,) = (tmp_path / "cnn").iterdir()
    assert "stopping after this step" in err
    assert f"stopped after step 4 of epoch 2/3; checkpoints/last.ckpt holds epoch 1); continue with: " \
           f"vislab run cnn --resume {run}" in err
    assert "Traceback" not in err
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not list(run.rglob("*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    _, resumed = run_study("cnn", resume_dir=str(run))
    assert table(resumed) == table(reference["cnn"])
    assert figures(resumed) == figures(reference["cnn"])


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    _act_at(monkeypatch, 1, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
    assert main(["run", "cnn", *(f"--{item}" for item in CNN), f"--out={tmp_path}"]) == 130
    err = capsys.readouterr().err
    assert "stopped after step 2 of epoch 1/3; no epoch finished, so there is nothing to resume" in err
    (run,) = (tmp_path / "cnn").iterdir()
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"


# --- NaN / Inf loss ------------------------------------------------------------------------------


def _poison_loss(monkeypatch, *, epoch: int, step: int, value: float) -> None:
    """Make the training loss `value` at `step` of `epoch` (as a real divergence would)."""

    def wrap(training_step, count):
        def poisoned(model, batch):
            output = training_step(model, batch)
            loss, extras = output if isinstance(output, tuple) else (output, None)
            if count == step:
                loss = loss * value
            return (loss, extras) if extras is not None else loss

        return poisoned

    _wrap_step(monkeypatch, epoch, wrap)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_nan_or_inf_loss_stops_names_the_step_keeps_the_good_checkpoint(tmp_path, monkeypatch, capsys, value):
    _poison_loss(monkeypatch, epoch=2, step=3, value=value)
    assert main(["run", "cnn", *(f"--{item}" for item in CNN), f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"vislab: error: training loss became {value} at step 3 of epoch 2/3" in err
    errors = [line for line in err.splitlines() if line.startswith("vislab: error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err
    (run,) = (tmp_path / "cnn").iterdir()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "failed" and "at step 3 of epoch 2/3" in meta["error"]
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = load_checkpoint(run / "checkpoints" / name)
        assert checkpoint["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert [row["epoch"] for row in table(run)] == ["1"]


def test_a_learning_rate_that_diverges_stops_in_the_first_epoch_and_keeps_the_folder(tmp_path, capsys):
    """No monkeypatch: SGD at lr 1e6 overflows within a few steps. The folder is kept (its meta
    says why it failed) even though no epoch finished."""
    config = [item for item in CNN if not item.startswith("epochs=")] + ["lr=1e6", "schedule=constant", "epochs=1"]
    argv = ["run", "cnn", *(f"--{item}" for item in config), f"--out={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "training loss became" in err and "of epoch 1/1; lower the learning rate" in err
    (run,) = (tmp_path / "cnn").iterdir()
    assert json.loads((run / "meta.json").read_text())["status"] == "failed"
    assert not (run / "checkpoints" / "last.ckpt").exists()


# --- run folders: same second, full disk --------------------------------------------------------


def _create_many(out: str, owner: str, queue) -> None:
    from vislab.runs import Run

    paths = [Run.create(out, "cnn", "same") for _ in range(25)]
    for path in paths:
        path.write_text("owner.txt", owner)
    queue.put((owner, [str(path.path) for path in paths]))


def test_two_processes_creating_runs_at_once_never_share_a_folder(tmp_path):
    """Two processes each create 25 folders with the same name as fast as they can (within a
    second, so they collide on the timestamp): 50 distinct folders, each written once."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_create_many, args=(str(tmp_path), owner, queue)) for owner in ("a", "b")]
    for worker in workers:
        worker.start()
    created = dict(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert all(worker.exitcode == 0 for worker in workers)
    paths = created["a"] + created["b"]
    assert len(paths) == len(set(paths)) == 50
    for owner, mine in created.items():
        assert all(Path(path, "owner.txt").read_text() == owner for path in mine)


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    import vislab.runs as runs

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    monkeypatch.setattr(runs, "datetime", Frozen)
    overrides = ["data_root=builtin", "model_name=Q1_1", "epochs=1", "batch_size=64", "num_threads=1",
                 f"out={tmp_path}"]
    _, first = run_study("cnn", overrides=[*overrides, "seed=1"])
    _, second = run_study("cnn", overrides=[*overrides, "seed=2"])
    assert first != second and first.name.startswith("20260102-030405-") and second.name == first.name + "-2"
    assert [json.loads((path / "meta.json").read_text())["seed"] for path in (first, second)] == [1, 2]


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays_valid(tmp_path, monkeypatch, capsys):
    """The disk fills during epoch 2's checkpoint: every later write fails with ENOSPC."""
    import vislab.runs as runs

    real_fsync, checkpoint_writes = os.fsync, []
    full = []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".last.ckpt." in name:
            checkpoint_writes.append(name)
            if len(checkpoint_writes) == 2:
                full.append(True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", fsync)
    assert main(["run", "cnn", *(f"--{item}" for item in CNN), f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    (run,) = (tmp_path / "cnn").iterdir()
    assert f"vislab: error: cannot write {run / 'checkpoints' / 'last.ckpt'}: No space left on device; " \
           "free some disk space or choose another --out" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("vislab: error:")
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not list(run.rglob("*.tmp"))
    # meta.json could not be updated either (the disk is full): it still says running, whole
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    monkeypatch.setattr(runs.os, "fsync", real_fsync)  # space freed: the run resumes
    _, resumed = run_study("cnn", resume_dir=str(run))
    assert [row["epoch"] for row in table(resumed)] == ["1", "2", "3"]


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 8])
def test_one_cycle_schedule_survives_tiny_runs(total_steps):
    """4 steps at warm-up share 0.25 made torch's OneCycleLR divide by zero (a traceback for a
    valid config: epochs=1, batch_size=128 on the built-in cnn data)."""
    from vislab.engine import make_optimizer

    optimizer, scheduler = make_optimizer([torch.nn.Parameter(torch.zeros(1))], name="sgd", lr=0.1,
                                          schedule="onecycle", total_steps=total_steps, warmup_share=0.25)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
        assert math.isfinite(optimizer.param_groups[0]["lr"])
