"""The cnn study: pixel permutations, per-model recipes, a tiny sweep on built-in data, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from vislab.cli import evaluate_checkpoint, main, run_study
from vislab.config import load_config
from vislab.engine import epoch_generator
from vislab.errors import VislabError
from vislab.studies import cnn

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

TINY = ["data_root=builtin", "epochs=2", "batch_size=32", "num_threads=1"]


# ---------------------------------------------------------------------------------------------
# permutations


def distinct_images(batch: int = 3) -> torch.Tensor:
    """(batch, 3, 32, 32) whose pixels all differ, and whose 3 channels differ from each other."""
    pixels = torch.arange(batch * 32 * 32).view(batch, 1, 32, 32)
    return torch.cat([pixels, pixels + 10_000_000, pixels + 20_000_000], dim=1)


def test_fixed_order_is_a_seeded_bijection():
    order = cnn.fixed_order(seed=3, pixels=1024)
    assert torch.equal(order.sort().values, torch.arange(1024))
    assert torch.equal(order, cnn.fixed_order(seed=3, pixels=1024))
    assert not torch.equal(order, cnn.fixed_order(seed=4, pixels=1024))
    assert (order != torch.arange(1024)).float().mean() > 0.9  # it really moves pixels


def test_fixed_permutation_moves_whole_pixels_the_same_way_in_every_image():
    x = distinct_images()
    out = cnn.permute(x, "fixed", seed=0, generator=torch.Generator())
    order = cnn.fixed_order(0, 1024)
    flat_in, flat_out = x.flatten(2), out.flatten(2)  # (B, 3, 1024)
    # Every output position holds the three channel values of one input pixel: colours stay.
    assert torch.equal(flat_out, flat_in[:, :, order])
    assert torch.equal(flat_out[:, 1] - flat_out[:, 0], torch.full((3, 1024), 10_000_000))
    # A bijection per image: the multiset of pixels is unchanged and it can be undone.
    assert torch.equal(flat_out.sort(dim=2).values, flat_in)
    inverse = order.argsort()
    assert torch.equal(cnn.permute_pixels(out, inverse), x)


def test_per_image_permutations_differ_between_images_and_epochs_and_keep_channels_together():
    x = distinct_images(batch=4)
    base = x.flatten(2) - x.flatten(2)[:, :, :1]  # per-image offsets 0..1023 in each channel
    out = cnn.permute(x, "per-image", seed=0, generator=epoch_generator(0, 1, cnn.TRAIN_STREAM))
    orders = out.flatten(2)[:, 0] - x.flatten(2)[:, 0, :1]  # (B, 1024): source pixel of each position
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(1024))
    assert len({tuple(order.tolist()) for order in orders}) == 4  # one permutation per image
    assert torch.equal(out.flatten(2)[:, 2] - out.flatten(2)[:, 0], torch.full((4, 1024), 20_000_000))
    assert torch.equal(out.flatten(2).sort(dim=2).values - x.flatten(2)[:, :, :1], base)
    again = cnn.permute(x, "per-image", seed=0, generator=epoch_generator(0, 1, cnn.TRAIN_STREAM))
    other_epoch = cnn.permute(x, "per-image", seed=0, generator=epoch_generator(0, 2, cnn.TRAIN_STREAM))
    assert torch.equal(out, again) and not torch.equal(out, other_epoch)


def test_evaluation_sets_are_permuted_once_and_reproducibly():
    from vislab.data.builtin import tiny_cifar

    test = tiny_cifar("test", n_per_class=5)
    assert cnn.permuted_set(test, "none", 0, cnn.TEST_STREAM) is test
    a = cnn.permuted_set(test, "per-image", 0, cnn.TEST_STREAM)
    b = cnn.permuted_set(test, "per-image", 0, cnn.TEST_STREAM)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, test.labels)
    assert not torch.equal(a.images, test.images)
    fixed = cnn.permuted_set(test, "fixed", 0, cnn.TEST_STREAM)
    assert torch.equal(fixed.images.flatten(2), test.images.flatten(2)[:, :, cnn.fixed_order(0, 1024)])


# ---------------------------------------------------------------------------------------------
# recipes and config


def test_model_recipe_fills_only_the_keys_the_user_left_unset():
    config = cnn.with_recipe(load_config(cnn.Config, overrides=["model_name=Q1_1", "lr=0.01"]))
    tutorial = cnn.RECIPES["tutorial"]
    assert config.lr == 0.01  # given: kept
    assert (config.epochs, config.batch_size, config.augment) == (
        tutorial["epochs"], tutorial["batch_size"], tutorial["augment"])
    assert set(cnn.RECIPES["tutorial"]) == set(cnn.RECIPES["fast"])
    assert all(getattr(config, key) is not None for key in tutorial)


@pytest.mark.parametrize("override, message", [
    ("model_name=Q1_99", "did you mean: Q1_9, Q1_19"),
    ("epochs=0", "must be at least 1"),
    ("epochs=-3", "must be at least 1"),
    ("permute=fixed,shuffled", "'shuffled' is not one of none, fixed, per-image"),
    ("sweep=Q9_*", "matches no cnn model"),
    ("augment=rotate", "not one of none, flip, flip-translate"),
])
def test_bad_config_values_fail_before_any_work(override, message):
    with pytest.raises(VislabError, match=message):
        load_config(cnn.Config, overrides=[override])


# ---------------------------------------------------------------------------------------------
# runs on built-in data


def test_single_run_writes_the_summary_keys_and_its_resolved_recipe(tmp_path):
    summary, run_dir = run_study("cnn", overrides=[*TINY, "model_name=Q1_1", "permute=fixed", "train_limit=200", f"out={tmp_path}"])
    assert {"model_name", "params", "macs", "test_accuracy", "best_val_accuracy", "best_epoch",
            "per_class_accuracy", "seconds_per_epoch", "permute"} <= set(summary)
    assert summary["permute"] == "fixed" and summary["params"] == 62006
    from vislab.data.cifar import CIFAR10_CLASSES

    assert list(summary["per_class_accuracy"]) == list(CIFAR10_CLASSES)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["lr"] == cnn.RECIPES["tutorial"]["lr"] and config["epochs"] == 2  # resolved, override kept
    for name in ("plots/curves.png", "plots/permutations.png", "plots/per_class_accuracy.png",
                 "tables/per_class_test.csv", "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    # Evaluation alone permutes the test set the same way: the same figure.
    evaluated, _ = evaluate_checkpoint("cnn", str(run_dir), overrides=[f"out={tmp_path}"])
    assert evaluated["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_tiny_sweep_writes_one_table_a_grid_of_curves_and_each_variant(tmp_path):
    models = load_config(cnn.Config, overrides=["sweep=Q1_*"]).models()
    assert models[0] == "Q1_1"
    sweep = ",".join(models[:2]) if len(models) > 1 else "Q1_1"
    summary, run_dir = run_study("cnn", overrides=[*TINY, f"sweep={sweep}", "permute=none,per-image",
                                                   "train_limit=120", f"out={tmp_path}"])
    expected = [(name, mode) for name in sweep.split(",") for mode in ("none", "per-image")]
    rows = list(csv.DictReader((run_dir / "tables" / "sweep.csv").open()))
    assert [(row["name"], row["permute"]) for row in rows] == expected
    assert {"name", "params", "macs", "best_val_accuracy", "test_accuracy", "best_epoch",
            "seconds_per_epoch"} <= set(rows[0])
    assert all(row["epochs"] == "2" for row in rows)  # the same epochs for every variant
    for name in ("sweep_curves.png", "accuracy_vs_params.png", "per_class_accuracy.png", "permutations.png"):
        assert (run_dir / "plots" / name).is_file(), name
    assert len(summary["variants"]) == len(expected)
    for (name, mode), variant in zip(expected, summary["variants"]):
        folder = run_dir / "variants" / (name if mode == "none" else f"{name}-{mode}")
        saved = json.loads((folder / "summary.json").read_text())
        assert saved["model_name"] == name and saved["permute"] == mode and saved["train_images"] == 120
        assert yaml.safe_load((folder / "config.yaml").read_text())["sweep"] == ""
        assert (folder / "checkpoints" / "best.ckpt").is_file()
    per_class = list(csv.DictReader((run_dir / "tables" / "per_class_test.csv").open()))
    assert len(per_class) == 10 and len(per_class[0]) == 1 + len(expected)


# ---------------------------------------------------------------------------------------------
# bad data: one line, exit 2


def write_cifar_folder(root: Path, split: str, classes, per_class: int = 2) -> None:
    from torchvision.io import encode_jpeg

    for label, name in enumerate(classes):
        folder = root / "cifar10-jpeg" / split / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            image = torch.full((3, 32, 32), 20 * label + index, dtype=torch.uint8)
            (folder / f"{index:04d}.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())


def test_a_corrupt_image_in_a_class_folder_is_one_line_exit_2(tmp_path, capsys):
    from vislab.data.cifar import CIFAR10_CLASSES

    write_cifar_folder(tmp_path, "train", CIFAR10_CLASSES)
    write_cifar_folder(tmp_path, "test", CIFAR10_CLASSES)
    bad = tmp_path / "cifar10-jpeg" / "train" / "cat" / "0001.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    assert main(["run", "cnn", f"--data-root={tmp_path}", "--model-name=Q1_1", f"--out={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0001.jpg" in err and "cat" in err
    assert not any((tmp_path / "runs").rglob("config.yaml"))


def test_a_test_set_without_a_class_is_one_line_exit_2(tmp_path, capsys):
    from vislab.data.cifar import CIFAR10_CLASSES

    write_cifar_folder(tmp_path, "train", CIFAR10_CLASSES)
    write_cifar_folder(tmp_path, "test", [name for name in CIFAR10_CLASSES if name != "frog"])
    assert main(["run", "cnn", f"--data-root={tmp_path}", "--model-name=Q1_1", f"--out={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frog" in err


def test_unknown_model_lists_the_close_ones(capsys, tmp_path):
    assert main(["run", "cnn", "--model-name=Q1_", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'Q1_'" in err and "did you mean: Q1_9" in err and err.count("\n") == 1


@pytest.mark.parametrize("preset", sorted(path for path in (Path(__file__).parents[1] / "configs" / "cnn").glob("*.yaml")
                                           if not path.name.startswith("tune-")),  # search spaces: test_tune.py
                         ids=lambda path: path.name)
def test_every_preset_is_a_valid_config(preset):
    config = load_config(cnn.Config, yaml_file=preset)
    assert config.models() and cnn.with_recipe(config).epochs >= 1


def test_the_default_is_the_strong_model_with_its_recipe():
    config = cnn.with_recipe(cnn.Config())
    assert config.model_name == "ResNet_fast"
    assert {key: getattr(config, key) for key in cnn.RECIPES["fast"]} == cnn.RECIPES["fast"]
    assert load_config(cnn.Config, yaml_file=Path(__file__).parents[1] / "configs" / "cnn" / "fast.yaml") == config
