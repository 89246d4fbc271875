"""Run folders: unique names, atomic files, safe checkpoint loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from vislab.errors import VislabError
from vislab.runs import Run, atomic_write, load_checkpoint


def test_runs_started_together_get_different_folders(tmp_path):
    runs = [Run.create(tmp_path, "cnn", "same-name") for _ in range(5)]
    assert len({run.path for run in runs}) == 5
    assert all(run.path.parent == tmp_path / "cnn" for run in runs)


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_write(path, b"good")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(VislabError, match="No space left"):
        atomic_write(path, b"half")
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_metrics_rows_summary_and_checkpoint_round_trip(tmp_path):
    run = Run.create(tmp_path, "cnn", "x")
    run.append_metrics({"epoch": 1, "lr": 0.1, "train_loss": 1.5, "seconds": 2.0})
    run.append_metrics({"epoch": 2, "lr": 0.05, "train_loss": 1.25, "seconds": 2.0})
    run.truncate_metrics(1)
    assert [row["epoch"] for row in run.metrics()] == ["1"]
    run.write_summary({"test_accuracy": 0.5, "nan": float("nan")})
    assert run.summary() == {"test_accuracy": 0.5, "nan": None}
    state = {"model": {"w": torch.ones(2)}, "epoch": 3, "config": {"seed": 0}}
    run.save_checkpoint("last.ckpt", state)
    loaded = load_checkpoint(run.checkpoint_path("last.ckpt"))
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"model": _Exploit()}, path)
    with pytest.raises(VislabError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(VislabError):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned.txt").exists()


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(VislabError, match="not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(VislabError, match="cannot load"):
        load_checkpoint(empty)
    listing = tmp_path / "list.ckpt"
    torch.save([1, 2], listing)
    with pytest.raises(VislabError, match="not a dict"):
        load_checkpoint(listing)
    with pytest.raises(VislabError, match="not a vislab run folder"):
        Run.open(tmp_path)
