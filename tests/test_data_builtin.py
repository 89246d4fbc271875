"""The generated sets: deterministic, the promised shapes, and learnable by simple means."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vislab.data.builtin import digits, synthetic_lfw, tiny_cifar
from vislab.data.cifar import CIFAR10_CLASSES
from vislab.data.lfw import check_pairs, default_pairs_files, find_image_dir, list_people, load_faces, parse_pairs
from vislab.errors import VislabError


def nearest_centroid_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> float:
    train_x, test_x = train_x.flatten(1).float(), test_x.flatten(1).float()
    centroids = torch.stack([train_x[train_y == c].mean(0) for c in range(10)])
    return (torch.cdist(test_x, centroids).argmin(1) == test_y).float().mean().item()


def test_digits_stand_in_for_mnist() -> None:
    train, test = digits("train"), digits("test")
    assert train.images.shape == (1437, 1, 28, 28) and test.images.shape == (360, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert train.classes == tuple("0123456789")
    train_counts, test_counts = torch.bincount(train.labels), torch.bincount(test.labels)
    assert (test_counts.float() / (train_counts + test_counts) - 0.2).abs().max() < 0.02  # stratified
    assert torch.equal(digits("train").images, train.images)
    assert nearest_centroid_accuracy(train.images, train.labels, test.images, test.labels) > 0.8


def test_tiny_cifar_is_deterministic_and_learnable() -> None:
    train, test = tiny_cifar("train"), tiny_cifar("test")
    assert train.images.shape == (600, 3, 32, 32) and train.classes == CIFAR10_CLASSES
    assert torch.bincount(train.labels).tolist() == [60] * 10
    assert torch.equal(tiny_cifar("train").images, train.images)
    assert not torch.equal(train.images, test.images)  # the test split has its own stream
    assert not torch.equal(tiny_cifar("train", seed=1).images, train.images)
    assert tiny_cifar("test", n_per_class=3).images.shape == (30, 3, 32, 32)
    # Far above chance (0.1) even for a nearest-centroid classifier; noise keeps it off 1.0.
    assert nearest_centroid_accuracy(train.images, train.labels, test.images, test.labels) > 0.5


def test_unknown_split() -> None:
    with pytest.raises(VislabError, match="did you mean: train"):
        digits("trian")


@pytest.fixture(scope="module")
def small_lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "root"
    return synthetic_lfw(root, n_train_people=6, n_test_people=4, images_per_person=3)


def test_synthetic_lfw_has_the_lfw_layout(small_lfw: Path) -> None:
    image_dir = find_image_dir(small_lfw)
    people = list_people(image_dir)
    assert len(people) == 10 and set(people.values()) == {3}
    train_file, test_file = default_pairs_files(small_lfw)
    train, test = parse_pairs(train_file), parse_pairs(test_file)
    check_pairs(image_dir, train, train_file)
    check_pairs(image_dir, test, test_file)
    assert sum(p.same for p in train) == len(train) // 2 and sum(p.same for p in test) == len(test) // 2
    names = lambda pairs: {n for p in pairs for n in (p.name1, p.name2)}  # noqa: E731
    assert not names(train) & names(test)
    assert all(" " not in name for name in people)
    assert not list(small_lfw.parent.glob(".*tmp*"))  # built in a temp folder, then renamed


def test_synthetic_lfw_is_reused_and_identities_are_learnable(small_lfw: Path) -> None:
    stamp = (small_lfw / "lfw" / "pairsDevTrain.txt").stat().st_mtime_ns
    assert synthetic_lfw(small_lfw, n_train_people=6, n_test_people=4, images_per_person=3) == small_lfw
    assert (small_lfw / "lfw" / "pairsDevTrain.txt").stat().st_mtime_ns == stamp
    with pytest.raises(VislabError, match="not a synthetic LFW root made with these settings"):
        synthetic_lfw(small_lfw, n_train_people=7, n_test_people=4, images_per_person=3)

    # Same-person pairs are closer in raw pixels than different-person pairs (AUC near 1).
    image_dir = find_image_dir(small_lfw)
    pairs = parse_pairs(default_pairs_files(small_lfw)[0])
    faces = load_faces(
        image_dir,
        [(p.name1, p.index1) for p in pairs] + [(p.name2, p.index2) for p in pairs],
        size=32,
        grayscale=False,
        crop=None,
    ).flatten(1).float()
    distance = (faces[: len(pairs)] - faces[len(pairs) :]).norm(dim=1)
    same = torch.tensor([p.same for p in pairs])
    auc = (distance[same].view(-1, 1) < distance[~same].view(1, -1)).float().mean().item()
    assert auc > 0.9
