"""The latent study: seeded label draws, the Frechet distance against the closed form for two
Gaussians, label spreading against scikit-learn, bad input, and a tiny run of every stage."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vislab.analysis.fid import FeatureModule, FrechetDistance, batched
from vislab.cli import main
from vislab.config import load_config
from vislab.errors import VislabError
from vislab.runs import load_checkpoint
from vislab.studies.latent import Config, draw_labels, entropy_bits, knn_graph, knn_indices, label_spreading, nt_xent

SUMMARY_KEYS = {
    "ae_test_mse", "fewlabel_accuracy", "fewlabel_accuracy_std", "fewlabel_labels", "fewlabel_method",
    "report_head_accuracy", "report_head_finetuned_accuracy", "fid_recon", "fid_gan", "fid_cgan",
    "cgan_class_accuracy", "gan_class_entropy", "classifier_test_accuracy",
}
TINY = ["--data-root=builtin", "--train-limit=300", "--epochs=1", "--batch-size=64", "--fid-samples=120",
        "--num-threads=1", "--classifier.epochs=1", "--fewlabel.draws=2", "--fewlabel.head-epochs=3",
        "--fewlabel.contrastive-epochs=1", "--fewlabel.contrastive-batch-size=64", "--fewlabel.curve=[10,50,0]",
        "--fewlabel.curve-draws=1", "--fewlabel.head-val-size=40", "--gan.steps=40", "--cgan.steps=40",
        "--gan.batch-size=64", "--cgan.batch-size=64", "--gan.log-every=10", "--cgan.log-every=10"]


# --- the label draw ----------------------------------------------------------------------------


def test_label_draw_is_seeded_and_balanced() -> None:
    labels = torch.arange(1000) % 10
    first, again, other = (draw_labels(labels, 50, seed) for seed in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(torch.bincount(labels[first], minlength=10), torch.full((10,), 5))
    assert len(set(first.tolist())) == 50
    free = draw_labels(labels, 37, 0, per_class=False)
    assert len(set(free.tolist())) == 37 and torch.equal(free, draw_labels(labels, 37, 0, per_class=False))


def test_label_draw_refuses_impossible_counts() -> None:
    labels = torch.arange(100) % 10
    with pytest.raises(VislabError, match="only 100 images"):
        draw_labels(labels, 101, 0)
    with pytest.raises(VislabError, match="evenly over 10"):
        draw_labels(labels, 55, 0)
    with pytest.raises(VislabError, match="digit 3"):
        draw_labels(torch.cat([labels[labels != 3], torch.tensor([3])]), 20, 0)


def test_config_refuses_label_counts_not_divisible() -> None:
    with pytest.raises(VislabError, match="55 labels cannot be drawn evenly"):
        load_config(Config, overrides=["fewlabel.labels=55"])
    assert load_config(Config, overrides=["fewlabel.labels=55", "fewlabel.per_class=false",
                                          "fewlabel.curve=[10,55]"]).fewlabel.labels == 55
    with pytest.raises(VislabError, match="stage"):
        load_config(Config, overrides=["stage=gans"])


# --- maths against references ------------------------------------------------------------------


def _exact_gaussian_sample(mean: torch.Tensor, cov: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` points whose sample mean and (unbiased) covariance are exactly `mean`, `cov`."""
    x = torch.randn(count, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    whiten = torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (count - 1)))
    return x @ whiten.T @ torch.linalg.cholesky(cov).T + mean


def _identity_features(dim: int) -> FeatureModule:
    return FeatureModule(lambda x: x, dim)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians() -> None:
    mean1, mean2 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    var1, var2 = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 9.0], dtype=torch.float64)
    real = _exact_gaussian_sample(mean1, torch.diag(var1), 500, 0)
    fake = _exact_gaussian_sample(mean2, torch.diag(var2), 700, 1)
    # ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2 = (1 + 0 + 4) + (1 + 1 + 0) = 7
    expected = float(((mean1 - mean2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum())
    assert expected == pytest.approx(7.0)
    fid = FrechetDistance(_identity_features(3), batched(real, 128))
    assert fid(batched(fake, 100)) == pytest.approx(expected, rel=1e-6)
    assert fid(batched(real, 100)) == pytest.approx(0.0, abs=1e-6)  # the real statistics are kept
    assert fid.real_covariance_rank() == 3


def test_frechet_distance_matches_scipy_for_full_covariances() -> None:
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov1, cov2 = a @ a.T + np.eye(4), b @ b.T + 0.5 * np.eye(4)
    mean1, mean2 = rng.normal(size=4), rng.normal(size=4)
    expected = float(((mean1 - mean2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * sqrtm(cov1 @ cov2).real))
    real = _exact_gaussian_sample(torch.tensor(mean1), torch.tensor(cov1), 300, 2)
    fake = _exact_gaussian_sample(torch.tensor(mean2), torch.tensor(cov2), 300, 3)
    assert FrechetDistance(_identity_features(4), [real])([fake]) == pytest.approx(expected, rel=1e-6)


def test_label_spreading_matches_scikit_learn() -> None:
    from sklearn.datasets import load_digits
    from sklearn.neighbors import NearestNeighbors
    from sklearn.semi_supervised import LabelSpreading

    features, labels = load_digits(return_X_y=True)
    features, labels = features[:400], labels[:400]
    seeds = draw_labels(torch.as_tensor(labels), 30, 0)
    partial = np.full(len(labels), -1)
    partial[seeds.numpy()] = labels[seeds.numpy()]
    reference = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.6, max_iter=60, tol=1e-3).fit(features, partial)
    # scikit-learn's kNN graph: each point to its 7 nearest, itself included (dropped as a self-loop)
    graph = NearestNeighbors(n_neighbors=7).fit(features).kneighbors_graph(features, 7, mode="connectivity")
    ours = label_spreading(graph, seeds, torch.as_tensor(labels)[seeds], alpha=0.6, max_iter=60)
    np.testing.assert_allclose(ours.numpy(), reference.label_distributions_, atol=1e-9)
    assert (ours.argmax(1).numpy() == labels).mean() > 0.8


def test_knn_graph_is_symmetric_without_self_loops() -> None:
    points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.05]])
    neighbours = knn_indices(points, points, 1, exclude_self=True)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2, 2]
    graph = knn_graph(neighbours).toarray()
    assert (graph == graph.T).all() and graph.diagonal().sum() == 0 and graph[2, 4] == 1


def test_nt_xent_prefers_matching_views_and_entropy_in_bits() -> None:
    views = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    assert nt_xent(views, views, 0.1) < nt_xent(views, views.roll(1, 0), 0.1)
    assert entropy_bits(torch.full((10,), 0.1, dtype=torch.float64)) == pytest.approx(math.log2(10))
    assert entropy_bits(torch.tensor([1.0, 0.0])) == 0.0


# --- bad input -----------------------------------------------------------------------------------


def _write_idx(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data))


def test_truncated_idx_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    images = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(4 * 784)
    labels = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes(4)
    for prefix in ("train", "t10k"):
        _write_idx(mnist / f"{prefix}-images-idx3-ubyte.gz", images[:-10])  # truncated
        _write_idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert main(["run", "latent", f"--data-root={tmp_path}", f"--out={tmp_path / 'runs'}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "truncated" in error[0] and "train-images" in error[0]
    assert not list((tmp_path / "runs").glob("latent/*"))  # nothing half-written


def test_too_many_labels_fail_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "latent", "--data-root=builtin", "--fewlabel.labels=2000", f"--out={tmp_path}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "2000 labels asked for" in error[0]
    assert not list(tmp_path.glob("latent/*"))


def test_later_stage_needs_an_ae_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "latent", "--stage=gan", "--data-root=builtin", f"--out={tmp_path}"]) == 2
    assert "--ae-checkpoint" in capsys.readouterr().err


# --- a tiny run of every stage -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("latent-runs")
    assert main(["run", "latent", *TINY, f"--out={out}"]) == 0
    (run_dir,) = (out / "latent").iterdir()
    return run_dir


def test_tiny_chain_writes_everything(chain: Path) -> None:
    summary = json.loads((chain / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert 0 <= summary["fewlabel_accuracy"] <= 1 and summary["fewlabel_labels"] == 50
    assert summary["fid_feature_rank"] <= 64 and summary["fid_recon"] >= 0
    assert 0 <= summary["gan_class_entropy"] <= math.log2(10) + 1e-9
    for plot in ("ae_curves", "reconstructions", "head_accuracy_curves", "fewlabel_methods", "accuracy_vs_labels",
                 "gan_samples", "gan_losses", "gan_class_shares", "interpolation", "cgan_samples", "cgan_losses"):
        assert (chain / "plots" / f"{plot}.png").stat().st_size > 1000, plot
    curve = (chain / "tables" / "fewlabel_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 2 * 3  # two methods at 10, 50 and all labels
    draws = json.loads((chain / "label_draws.json").read_text())
    assert len(draws) == 2 and all(len(d["train_split_index"]) == 50 for d in draws.values())
    losses = (chain / "tables" / "gan_losses.csv").read_text().splitlines()
    assert losses[0].startswith("step,d_loss,g_loss") and len(losses) == 1 + 4
    state = load_checkpoint(chain)
    assert {"model", "classifier", "generator", "cgenerator", "contrastive_encoder", "config"} <= set(state)
    assert (chain / "report.html").is_file()


@pytest.mark.parametrize("stage", ["ae", "fewlabel", "gan", "cgan"])
def test_each_stage_alone(stage: str, chain: Path, tmp_path: Path) -> None:
    reuse = [] if stage == "ae" else [f"--ae-checkpoint={chain}"]
    assert main(["run", "latent", *TINY, f"--stage={stage}", *reuse, f"--out={tmp_path}"]) == 0
    (run_dir,) = (tmp_path / "latent").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "ae_test_mse" in summary and "fid_recon" in summary
    wanted = {"ae": "classifier_test_accuracy", "fewlabel": "fewlabel_accuracy", "gan": "fid_gan", "cgan": "cgan_class_accuracy"}
    assert wanted[stage] in summary
    others = {"fewlabel_accuracy", "fid_gan", "cgan_class_accuracy"} - {wanted[stage]}
    assert not others & set(summary)
    if stage != "ae":  # the AE is reused, not retrained
        assert summary["ae_test_mse"] == pytest.approx(json.loads((chain / "summary.json").read_text())["ae_test_mse"], rel=1e-5)
        assert not (run_dir / "metrics.csv").exists()


def test_ae_checkpoint_of_another_latent_size_is_refused(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "latent", *TINY, "--stage=gan", "--latent-dim=8", f"--ae-checkpoint={chain}",
                 f"--out={tmp_path}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "latent_dim 16" in error[0] and "--latent-dim=16" in error[0]


def test_eval_from_the_chain_checkpoint(chain: Path, tmp_path: Path) -> None:
    assert main(["eval", "latent", f"--checkpoint={chain}", f"--out={tmp_path}"]) == 0
    (run_dir,) = (tmp_path / "latent").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    original = json.loads((chain / "summary.json").read_text())
    assert summary["ae_test_mse"] == pytest.approx(original["ae_test_mse"], rel=1e-5)
    assert {"fid_gan", "fid_cgan", "cgan_class_accuracy"} <= set(summary)
