"""The imbalance study: the split, metrics against scikit-learn, SMOTE against imbalanced-learn,
the course-pickle unpickler, bad input, and tiny end-to-end runs on built-in data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import real_data
from vislab.data import ImageSet
from vislab.data.apml import CLASSES, DEV_COUNTS, TRAIN_COUNTS, imbalanced_split, load_course_pickle, manifest_names
from vislab.data.cifar import CIFAR10_CLASSES
from vislab.errors import VislabError


def cifar_like(per_class: int) -> ImageSet:
    """A CIFAR-10-named pool ordered by class (like the loader), each image unique: pixel
    (0, 0) holds its index, so overlaps between splits show up as equal images."""
    count = 10 * per_class
    index = torch.arange(count)
    images = torch.stack([(index // 256**k) % 256 for k in range(3)], 1).to(torch.uint8)  # (N, 3)
    return ImageSet(images.view(count, 3, 1, 1).contiguous(), index // per_class, CIFAR10_CLASSES)


# --- the split ---------------------------------------------------------------------------------


def test_split_has_the_course_counts_no_overlap_and_is_deterministic() -> None:
    train_pool, test_pool = cifar_like(5000), cifar_like(1000)
    sets, manifest = imbalanced_split(train_pool, test_pool, seed=0)
    assert torch.bincount(sets["dev"].labels).tolist() == list(DEV_COUNTS) == [551, 51, 23]
    assert torch.bincount(sets["train"].labels).tolist() == list(TRAIN_COUNTS) == [4449, 412, 186]
    assert torch.bincount(sets["test"].labels).tolist() == [1000, 1000, 1000]
    assert len(sets["train"]) == 5047 and len(sets["dev"]) == 625
    assert set(manifest["train"]).isdisjoint(manifest["dev"])
    # labels follow the course's order: car 0 = automobile, truck 1, cat 2
    for split, pool in (("train", train_pool), ("dev", train_pool), ("test", test_pool)):
        source = pool.labels[manifest[split]]
        expected = torch.tensor([CIFAR10_CLASSES.index(n) for n in ("automobile", "truck", "cat")])
        assert torch.equal(source, expected[sets[split].labels])
        assert torch.equal(sets[split].images, pool.images[manifest[split]])
    again, manifest_again = imbalanced_split(train_pool, test_pool, seed=0)
    assert manifest_again == manifest and torch.equal(again["train"].images, sets["train"].images)
    other, _ = imbalanced_split(train_pool, test_pool, seed=1)
    assert not torch.equal(other["dev"].images, sets["dev"].images)
    names = manifest_names(manifest, train_pool, test_pool)
    assert names["dev"][0].startswith("train/automobile/") and names["test"][-1].startswith("test/cat/")
    assert len(set(names["train"]) | set(names["dev"])) == 5047 + 625


def test_split_refuses_a_pool_that_is_too_small() -> None:
    with pytest.raises(VislabError, match="class car"):
        imbalanced_split(cifar_like(100), cifar_like(1000))


# --- the course's pickles ----------------------------------------------------------------------


def test_course_pickle_loads_tensors(tmp_path: Path) -> None:
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    path = tmp_path / "dev.pickle"
    path.write_bytes(pickle.dumps([(images[i], i % 3) for i in range(4)], protocol=2))
    loaded = load_course_pickle(path)
    assert loaded.labels.tolist() == [0, 1, 2, 0] and loaded.classes == CLASSES
    expected = ((images / 2 + 0.5) * 255).round().to(torch.uint8)
    assert torch.equal(loaded.images, expected)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_course_pickle_refuses_any_other_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "train.pickle"
    path.write_bytes(pickle.dumps([(torch.zeros(3, 32, 32), 0), _Evil()], protocol=2))
    with pytest.raises(VislabError, match="refused to load global (posix|os|nt).system"):
        load_course_pickle(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(VislabError, match="not a non-empty list"):
        load_course_pickle(path)


# --- metrics against scikit-learn --------------------------------------------------------------


class Lookup(nn.Module):
    """Returns preset logits for images whose first pixel holds their index."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


def test_split_figures_match_sklearn_classification_report() -> None:
    from sklearn.metrics import balanced_accuracy_score, classification_report, confusion_matrix

    from vislab.studies.imbalance import split_figures

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 150 + [1] * 20 + [2] * 10)
    logits = torch.randn(180, 3, generator=generator) + 1.5 * nn.functional.one_hot(labels, 3)
    images = torch.arange(180).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    figures = split_figures(Lookup(logits), ImageSet(images, labels, CLASSES), "dev", None, tta=False)
    predicted = logits.argmax(1).numpy()
    report = classification_report(labels.numpy(), predicted, target_names=CLASSES, output_dict=True, zero_division=0)
    for name in CLASSES:
        for key, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert figures["per_class"][name][key] == pytest.approx(report[name][theirs])
    assert figures["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert figures["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])
    assert figures["macro_precision"] == pytest.approx(report["macro avg"]["precision"])
    assert figures["accuracy"] == pytest.approx(report["accuracy"])
    assert figures["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels.numpy(), predicted))
    assert figures["confusion_matrix"] == confusion_matrix(labels.numpy(), predicted).tolist()


# --- strategies ---------------------------------------------------------------------------------


def small_train(per_class=(60, 8, 4)) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = torch.randint(0, 256, (len(labels), 3, 4, 4), generator=generator, dtype=torch.uint8)
    return ImageSet(images, labels, CLASSES)


def test_smote_on_pixels_is_imbalanced_learns() -> None:
    from imblearn.over_sampling import SMOTE

    from vislab.studies.imbalance import Config, resample

    train = small_train()
    out = resample(Config(smote_k=3), ("smote-pixels",), train, seed=5)
    assert torch.bincount(out.labels).tolist() == [60, 60, 60]
    flat, labels = SMOTE(k_neighbors=3, random_state=5).fit_resample(train.images.flatten(1).numpy().astype(np.float32),
                                                                       train.labels.numpy())
    assert np.array_equal(out.labels.numpy(), labels)
    assert np.array_equal(out.images.flatten(1).numpy(), np.clip(np.round(flat), 0, 255).astype(np.uint8))
    assert torch.equal(out.images[: len(train)], train.images)  # the originals come first, unchanged


def test_smote_on_features_balances_and_interpolates_within_a_class() -> None:
    from imblearn.over_sampling import SMOTE

    from vislab.studies.imbalance import smote_features

    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 6 + [2] * 4)
    features = rng.normal(size=(60, 5)) + 10 * labels[:, None]
    balanced, new_labels = smote_features(features, labels, 3, 1)
    assert np.bincount(new_labels).tolist() == [50, 50, 50]
    reference, reference_labels = SMOTE(k_neighbors=3, random_state=1).fit_resample(features, labels)
    np.testing.assert_allclose(balanced, reference)
    for c in (1, 2):  # synthetic points lie inside their class's bounding box
        synthetic = balanced[60:][new_labels[60:] == c]
        own = features[labels == c]
        assert (synthetic >= own.min(0) - 1e-9).all() and (synthetic <= own.max(0) + 1e-9).all()


def test_samplers_and_offline_augmentation_change_the_counts() -> None:
    from vislab.studies.imbalance import Config, resample

    train = small_train()
    assert torch.bincount(resample(Config(), ("oversample",), train, 0).labels).tolist() == [60, 60, 60]
    assert torch.bincount(resample(Config(), ("undersample",), train, 0).labels).tolist() == [4, 4, 4]
    enlarged = resample(Config(aug_copies=2, translate=1), ("offline-aug",), train, 0)
    assert len(enlarged) == 3 * len(train) and torch.equal(enlarged.images[: len(train)], train.images)


def test_losses_reduce_to_their_definitions() -> None:
    import torch.nn.functional as F

    from vislab.studies.imbalance import Config, make_loss

    counts = torch.tensor([80.0, 15.0, 5.0])
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 0, 1])
    prior = (counts / counts.sum()).log()
    assert make_loss(Config(), ("none",), counts)(logits, y, 1) == pytest.approx(F.cross_entropy(logits, y).item())
    assert make_loss(Config(), ("balanced-softmax",), counts)(logits, y, 1) == pytest.approx(
        F.cross_entropy(logits + prior, y).item())
    weights = counts.sum() / (3 * counts)
    assert make_loss(Config(), ("class-weights",), counts)(logits, y, 1) == pytest.approx(
        F.cross_entropy(logits, y, weight=weights).item())
    p_true = logits.softmax(1)[torch.arange(10), y]
    focal = (-(1 - p_true) ** 2 * p_true.log()).mean()
    assert make_loss(Config(focal_gamma=2.0), ("focal",), counts)(logits, y, 1) == pytest.approx(focal.item(), rel=1e-5)


def test_unknown_or_clashing_strategies_fail_with_one_line() -> None:
    from vislab.config import load_config
    from vislab.studies.imbalance import Config

    with pytest.raises(VislabError, match="unknown strategy 'focall'.*did you mean: focal"):
        load_config(Config, overrides=["strategies=online-aug+focall"])
    with pytest.raises(VislabError, match="cannot be combined"):
        load_config(Config, overrides=["strategies=oversample+undersample"])


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_of_another_shape_names_the_layer(tmp_path: Path) -> None:
    from vislab.models.imbalance import SimpleModel
    from vislab.studies.imbalance import load_any_checkpoint

    state = SimpleModel(num_classes=4).state_dict()
    path = tmp_path / "other.ckpt"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(VislabError, match=r"layer fc3.weight has shape \(4, 84\)"):
        load_any_checkpoint(str(path))


@pytest.mark.real_data
def test_course_checkpoint_has_66171_parameters_and_favours_car() -> None:
    from vislab.models.registry import count_parameters
    from vislab.studies.imbalance import load_any_checkpoint

    path = real_data("apml-ex1") / "pre_trained.ckpt"
    model, bias, _ = load_any_checkpoint(str(path))
    assert count_parameters(model.net) == 66_171
    with torch.no_grad():
        predicted = model(torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))).argmax(1)
    assert (predicted == 0).all()  # the "predicts car for everything" finding
    assert model.net.fc3.bias.argmax().item() == 0


# --- end to end on built-in data ----------------------------------------------------------------


def run_cli(*args: str, capsys=None) -> int:
    from vislab.cli import main

    return main(["run", "imbalance", "--data-root=builtin", "--num-threads=1", *args])


def test_tiny_run_with_attack_writes_summary_plots_and_manifest(tmp_path: Path, capsys) -> None:
    assert run_cli(f"--out={tmp_path}", "--model-name=apml_simple", "--epochs=2", "--batch-size=32", "--attack",
                   "--adv.images=9",
                   "--adv.noise_steps=20", "--adv.sweep=[0,8]", "--adv.examples=2") == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("dev_accuracy", "dev_macro_f1", "dev_balanced_accuracy", "test_accuracy", "test_macro_f1",
                "test_balanced_accuracy", "per_class", "strategy", "pgd_targeted_success",
                "noise_targeted_success", "noise_mean_linf", "noise_mean_l2", "fgsm_accuracy", "pgd_accuracy"):
        assert key in summary, key
    assert set(summary["per_class"]) == {"dev", "test"}
    assert set(summary["per_class"]["dev"]["cat"]) == {"precision", "recall", "f1", "accuracy"}
    assert set(summary["pgd_accuracy"]) == {"0", "8"} and 0 <= summary["pgd_accuracy"]["8"] <= 1
    for plot in ("confusion_dev", "confusion_test", "curves", "epsilon_sweep", "adversarial_examples"):
        assert (folder / "plots" / f"{plot}.png").stat().st_size > 1000
    for table in ("per_class_dev", "per_class_test", "attack_pairs", "epsilon_sweep"):
        assert (folder / "tables" / f"{table}.csv").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["indices"]["dev"]) == 100 and len(manifest["indices"]["test"]) == 180
    assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / "report.html").is_file()

    # evaluation of that checkpoint, with the attacks, through `vislab eval`
    from vislab.cli import main

    assert main(["eval", "imbalance", "--checkpoint", str(folder), "--adv.images=6", "--adv.noise_steps=5",
                 "--adv.sweep=[4]", "--attack", f"--out={tmp_path}"]) == 0
    evaluated = Path(capsys.readouterr().out.strip().splitlines()[-1])
    again = json.loads((evaluated / "summary.json").read_text())
    assert again["dev_macro_f1"] == pytest.approx(summary["dev_macro_f1"])
    assert "pgd_accuracy" in again


def test_tiny_compare_and_lr_study(tmp_path: Path, capsys) -> None:
    common = [f"--out={tmp_path}", "--model-name=apml_simple", "--epochs=1", "--batch-size=32"]
    assert run_cli(*common, "--compare", "--compare-strategies=[none,class-weights+online-aug]",
                   "--compare-seeds=2") == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rows = (folder / "tables" / "comparison.csv").read_text().splitlines()
    assert len(rows) == 3 and "+-" in rows[1]
    assert len((folder / "tables" / "compare_runs.csv").read_text().splitlines()) == 5
    assert (folder / "plots" / "comparison.png").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["comparison"]) == {"none", "class-weights+online-aug"}

    assert run_cli(*common, "--lr-study", "--lr-values=[1e-10,0.1]", "--lr-study-epochs=2") == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (folder / "plots" / "lr_curves.png").is_file() and (folder / "plots" / "lr_range_test.png").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["lr_study"]) == {"1e-10", "0.1"} and summary["suggested_lr"] > 0
    tiny = summary["lr_study"]["1e-10"]
    assert tiny["final_train_loss"] == pytest.approx(tiny["final_train_loss"])  # finite


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert run_cli(f"--out={tmp_path}", "--strategies=smote") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "unknown strategy 'smote'" in error
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps([_Evil()]))
    assert run_cli(f"--out={tmp_path}", f"--train-pickle={evil}", f"--dev-pickle={evil}") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "refused to load global" in error and "evil.pickle" in error
    assert not list((tmp_path / "imbalance").glob("*"))  # nothing half-written


def test_corrupt_image_in_a_class_folder_is_one_line(tmp_path: Path, capsys) -> None:
    from torchvision.io import encode_jpeg

    from vislab.cli import main

    jpeg = encode_jpeg(torch.zeros(3, 32, 32, dtype=torch.uint8)).numpy().tobytes()
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            folder = tmp_path / "data" / "cifar10-jpeg" / split / name
            folder.mkdir(parents=True)
            (folder / "0000.jpg").write_bytes(jpeg)
    (tmp_path / "data" / "cifar10-jpeg" / "train" / "cat" / "0001.jpg").write_bytes(b"this is not a JPEG")
    assert main(["run", "imbalance", f"--data-root={tmp_path / 'data'}", f"--out={tmp_path / 'runs'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "cat/0001.jpg" in error
    assert not list((tmp_path / "runs" / "imbalance").glob("*"))
