"""CIFAR-10 from class-folder JPEGs, their tar.gz, and (safely) pickled python batches."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from conftest import real_data, write_archive
from vislab.data.cifar import CIFAR10_CLASSES, class_counts, load_cifar10
from vislab.errors import VislabError


def jpeg(seed: int, size: int = 32) -> bytes:
    image = torch.randint(0, 256, (3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(image, quality=95).numpy().tobytes()


def jpeg_files(split: str, per_class: int = 2) -> dict[str, bytes]:
    """Archive-relative path -> JPEG bytes for every class; file names out of order on purpose."""
    return {
        f"{split}/{name}/{index:04d}.jpg": jpeg(label * 100 + index)
        for label, name in enumerate(CIFAR10_CLASSES)
        for index in reversed(range(per_class))
    }


def write_folder(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / "cifar10-jpeg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def expected_labels(per_class: int = 2) -> list[int]:
    return [label for label in range(10) for _ in range(per_class)]


def test_class_folders(tmp_path: Path) -> None:
    files = jpeg_files("test")
    write_folder(tmp_path, files)
    split = load_cifar10(tmp_path, "test")
    assert split.images.shape == (20, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == expected_labels() and class_counts(split) == [2] * 10
    assert split.classes == CIFAR10_CLASSES


def test_archive_gives_the_same_images_as_folders(tmp_path: Path) -> None:
    files = jpeg_files("train")
    write_folder(tmp_path / "folder", files)
    write_archive(tmp_path / "archive", "train", files)
    from_folder = load_cifar10(tmp_path / "folder", "train")
    from_archive = load_cifar10(tmp_path / "archive", "train")
    assert torch.equal(from_folder.images, from_archive.images)
    assert torch.equal(from_folder.labels, from_archive.labels)


def test_order_is_by_class_then_file_name(tmp_path: Path) -> None:
    files = jpeg_files("test")
    write_archive(tmp_path, "test", files)
    split = load_cifar10(tmp_path, "test")
    single = load_cifar10_single(tmp_path / "single", files["test/bird/0000.jpg"])
    assert torch.equal(split.images[4], single)  # bird is class 2: its 0000.jpg comes 5th


def load_cifar10_single(root: Path, data: bytes) -> torch.Tensor:
    files = {f"test/{name}/0000.jpg": data for name in CIFAR10_CLASSES}
    write_folder(root, files)
    return load_cifar10(root, "test").images[0]


def test_missing_folder_says_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(VislabError, match="cifar10-jpeg/test/.*cifar-10-batches-py.*--data-root") as error:
        load_cifar10(tmp_path, "test")
    assert "\n" not in str(error.value)
    with pytest.raises(VislabError, match="did you mean: test"):
        load_cifar10(tmp_path, "tests")


def test_corrupt_jpeg_in_folder_is_named(tmp_path: Path) -> None:
    files = jpeg_files("test")
    files["test/cat/0001.jpg"] = b"this is not a jpeg"
    write_folder(tmp_path, files)
    with pytest.raises(VislabError, match=r"cat/0001\.jpg: not a readable JPEG.*remove or replace"):
        load_cifar10(tmp_path, "test")


def test_corrupt_member_of_archive_is_named(tmp_path: Path) -> None:
    files = jpeg_files("test")
    files["test/dog/0000.jpg"] = files["test/dog/0000.jpg"][:20]
    write_archive(tmp_path, "test", files)
    with pytest.raises(VislabError, match=r"member test/dog/0000\.jpg: not a readable JPEG"):
        load_cifar10(tmp_path, "test")


def test_truncated_archive_is_an_error(tmp_path: Path) -> None:
    archive = write_archive(tmp_path, "test", jpeg_files("test"))
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(VislabError, match="corrupt or unreadable archive"):
        load_cifar10(tmp_path, "test")


def test_missing_class_and_wrong_size_are_named(tmp_path: Path) -> None:
    files = {k: v for k, v in jpeg_files("test").items() if "/deer/" not in k}
    write_folder(tmp_path / "a", files)
    with pytest.raises(VislabError, match="no images of class deer"):
        load_cifar10(tmp_path / "a", "test")
    files = jpeg_files("test")
    files["test/ship/0001.jpg"] = jpeg(7, size=48)
    write_archive(tmp_path / "b", "test", files)
    with pytest.raises(VislabError, match=r"ship/0001\.jpg: image is 48x48"):
        load_cifar10(tmp_path / "b", "test")


def test_unknown_class_folder_suggests_a_name(tmp_path: Path) -> None:
    files = jpeg_files("test")
    files["test/airplain/0000.jpg"] = files.pop("test/airplane/0000.jpg")
    write_folder(tmp_path, files)
    with pytest.raises(VislabError, match="airplain.*did you mean: airplane"):
        load_cifar10(tmp_path, "test")


# --- python batches ----------------------------------------------------------------------------


def write_batches(root: Path, split: str, count: int, protocol: int) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    all_data, all_labels = [], []
    for number, name in enumerate(names):
        data = np.random.default_rng(number).integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [(i + number) % 10 for i in range(count)]
        batch = {b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * count}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        all_data.append(data)
        all_labels += labels
    return np.concatenate(all_data), all_labels


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_pickled_batches(tmp_path: Path, protocol: int) -> None:
    data, labels = write_batches(tmp_path, "train", 4, protocol)
    split = load_cifar10(tmp_path, "train")
    assert split.images.shape == (20, 3, 32, 32) and split.labels.tolist() == labels
    assert torch.equal(split.images.reshape(20, -1), torch.from_numpy(data))  # R, G, B planes in order


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_asking_for_os_system_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": RunsAShellCommand(marker), b"labels": []}))
    with pytest.raises(VislabError, match=r"test_batch: .*refused to load global (posix|os|nt)\.system"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x04garbage", "corrupt pickle"),
        (pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch dict"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"shape \(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1 labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [42]}), "outside 0..9"),
    ],
)
def test_bad_pickled_batches(tmp_path: Path, payload: bytes, message: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(VislabError, match=message):
        load_cifar10(tmp_path, "test")


@pytest.mark.real_data
def test_real_cifar10_test_split() -> None:
    root = real_data("cifar10-jpeg").parent
    split = load_cifar10(root, "test")  # the 50,000-image train split is measured, not tested
    assert split.images.shape == (10000, 3, 32, 32)
    assert class_counts(split) == [1000] * 10
