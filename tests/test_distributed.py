"""Distributed training: 2 processes on this CPU (DDP over gloo on loopback) against 1 process.

Why the metrics must match closely, not only "within noise": with the global batch_size split
over the processes, the two shards of step k are together exactly the batch one process trains
on at step k (tests below use nets without batch-norm or dropout, and no augmentation that
depends on the shard), and DDP averages the two half-batch mean gradients, which is the
full-batch mean gradient. The only difference is the order of float additions (about 1e-7
relative per step), so after two short epochs losses may differ in the 5th decimal; we allow
1e-3 on losses and 1/30 on accuracies (two of 60 images, one of 36 pairs), which a wrong sharding (each process seeing the
whole data, or the same half twice) or a per-process batch of the global size would exceed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vislab.cli import main

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds: generous, CI machines run other jobs; a 2-process cnn run takes ~25 s here

CNN = ["run", "cnn", "--data-root=builtin", "--model-name=Q1_1", "--epochs=2", "--batch-size=32",
       "--train-limit=400", "--num-threads=1", "--accelerator=cpu"]
# A tower without batch-norm (per-process batch statistics would differ from one process's),
# with the per-pair binary loss (in-batch losses such as ntxent see only the local batch).
FACES_TOWER = """model_name: tower
loss: binary
conv_blocks:
  - {out_channels: 8, kernel: 3, pool: true}
  - {out_channels: 16, kernel: 3, pool: true}
fc_layers:
  - {out_features: 32, activation: sigmoid}
"""
FACES = ["run", "faces", "--data-root=builtin", "--epochs=2", "--batch-size=16", "--pairs-per-epoch=0",
         "--image-size=24", "--crop=160", "--oneshot-trials=50", "--num-threads=1", "--show-pairs=4",
         "--accelerator=cpu", "--precision=32-true"]  # fp32: bf16 rounding would swamp the comparison
DDP = ["--devices=2", "--strategy=ddp"]


def _vislab(args: list[str], *, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = (launcher or [sys.executable]) + ["-m", "vislab", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _only_run_folder(out: Path, study: str, stdout: str) -> Path:
    folders = [path for path in (out / study).iterdir() if path.is_dir()]
    assert len(folders) == 1, f"expected one run folder, found {folders}"
    printed = [line for line in stdout.splitlines() if line.strip()]
    assert printed == [str(folders[0])], f"stdout should be the one folder, got {printed}"
    return folders[0]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_same_run(one: Path, two: Path, summary_keys: dict[str, float]) -> None:
    rows_one, rows_two = _metrics(one), _metrics(two)
    assert len(rows_one) == len(rows_two) == 2
    for row_one, row_two in zip(rows_one, rows_two, strict=True):
        for key, value in row_one.items():
            if key == "seconds":
                continue
            tolerance = 1e-3 if "loss" in key or key == "lr" else 1.0 / 30
            assert float(row_two[key]) == pytest.approx(float(value), abs=tolerance), (key, row_one, row_two)
    summary_one = json.loads((one / "summary.json").read_text())
    summary_two = json.loads((two / "summary.json").read_text())
    for key, tolerance in summary_keys.items():
        assert summary_two[key] == pytest.approx(summary_one[key], abs=tolerance), key
    meta = json.loads((two / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["processes"] == 2
    assert (two / "checkpoints" / "best.ckpt").is_file() and (two / "report.html").is_file()


@pytest.mark.slow
def test_cnn_two_processes_match_one_process_of_the_same_global_batch(tmp_path):
    one = _only_run_folder(tmp_path / "one", "cnn", _vislab([*CNN, f"--out={tmp_path / 'one'}"]).stdout)
    two = _only_run_folder(tmp_path / "two", "cnn", _vislab([*CNN, *DDP, f"--out={tmp_path / 'two'}"]).stdout)
    # 600 test images: 1e-3 is less than one image
    _assert_same_run(one, two, {"test_accuracy": 1e-3, "best_val_accuracy": 1e-3})


@pytest.mark.slow
def test_cnn_under_torchrun_writes_one_run_folder(tmp_path):
    """torchrun starts both processes itself; Fabric reads its environment variables."""
    out = tmp_path / "torchrun"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    one_epoch = [arg for arg in CNN if not arg.startswith("--epochs=")] + ["--epochs=1"]
    done = _vislab([*one_epoch, *DDP, f"--out={out}"], launcher=launcher)
    run_dir = _only_run_folder(out, "cnn", done.stdout)
    assert json.loads((run_dir / "meta.json").read_text())["processes"] == 2
    assert len(_metrics(run_dir)) == 1


@pytest.mark.slow
def test_faces_two_processes_match_one_process_of_the_same_global_batch(tmp_path):
    (tmp_path / "tower.yaml").write_text(FACES_TOWER)
    args = [*FACES, f"--config={tmp_path / 'tower.yaml'}"]
    one = _only_run_folder(tmp_path / "one", "faces", _vislab([*args, f"--out={tmp_path / 'one'}"]).stdout)
    two = _only_run_folder(tmp_path / "two", "faces", _vislab([*args, *DDP, f"--out={tmp_path / 'two'}"]).stdout)
    # 128 test pairs: at most one may flip, since the float-order noise of the gradient average
    # moves the scores' last digits and with them the threshold chosen between near-equal scores
    _assert_same_run(one, two, {"test_accuracy": 1 / 128 + 1e-6, "test_auc": 2e-3})


@pytest.mark.parametrize("study", ["imbalance", "latent"])
def test_studies_without_a_distributed_loop_refuse_devices(study, capsys, tmp_path):
    assert main(["run", study, "--devices=2", "--strategy=ddp", f"--out={tmp_path}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "one process only" in error
    assert not any(tmp_path.iterdir())


def test_global_batch_must_split_over_processes_and_lr_scaling_is_explicit():
    from types import SimpleNamespace

    from vislab.engine import local_batch_size, scaled_lr
    from vislab.errors import VislabError

    assert local_batch_size(SimpleNamespace(world_size=4), 256) == 64
    with pytest.raises(VislabError, match="does not split evenly over 3 processes"):
        local_batch_size(SimpleNamespace(world_size=3), 256)
    assert scaled_lr(0.1, batch_size=512, scaling="none", reference_batch_size=128) == 0.1
    assert scaled_lr(0.1, batch_size=512, scaling="linear", reference_batch_size=128) == pytest.approx(0.4)
    assert scaled_lr(0.1, batch_size=512, scaling="sqrt", reference_batch_size=128) == pytest.approx(0.2)
    assert main(["run", "cnn", "--lr-scaling=linear", "--data-root=builtin"]) == 2  # no lr_batch_size given


def test_lr_scaling_sets_the_rate_the_optimiser_uses(tmp_path, capsys):
    """lr 0.01 tuned at batch 16, run at batch 32 with linear scaling: the metrics' lr is 0.02."""
    assert main(["run", "cnn", "--data-root=builtin", "--model-name=Q1_1", "--epochs=1", "--train-limit=200",
                 "--num-threads=1", "--schedule=constant", "--lr=0.01", "--batch-size=32", "--lr-scaling=linear",
                 "--lr-batch-size=16", f"--out={tmp_path}"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert float(_metrics(run_dir)[0]["lr"]) == pytest.approx(0.02)
