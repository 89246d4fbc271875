"""Bad input, systematically: every reader and every command, the realistic ways each goes wrong.

For each input vislab reads (LFW pairs files and image folders, IDX files, CIFAR-10 folders,
archives and python batches, the course's pickles, YAML configs and --key=value overrides,
checkpoints, run folders given to eval / report / --resume), the cases below try: missing,
empty, truncated, wrong format or magic, wrong shape or dtype, NaN/Inf, wrong encoding,
duplicates, paths escaping the data root ('..', absolute, symlinks) and huge header counts.

Each must give a `VislabError` whose message is one line naming the file (and the line or
field where there is one). Through the command line (second half of the module) the same
files give exit status 2, exactly one `vislab: error:` line, no traceback, and no run folder
left behind. With --debug the traceback is shown instead.

Policy for "nothing half-written": a fresh run that fails on bad input before its first
checkpoint leaves no folder (cli._guarded removes it); a run that has checkpoints is kept and
marked failed in meta.json. Symlinks: the top-level data folders (lfw/, mnist/, cifar10-jpeg/)
may be links (datasets are often linked in), but links inside a per-image folder (an LFW
person folder or image, a CIFAR class folder or image) must stay inside that folder: an
archive unpacked from anywhere cannot make vislab read files elsewhere. Paths the user types
(--data-root, --pairs-file, --checkpoint, ...) are the user's choice and are followed.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import write_archive
from vislab.cli import main
from vislab.config import load_config, split_overrides, to_dict
from vislab.data.apml import load_course_pickle
from vislab.data.cifar import CIFAR10_CLASSES, load_cifar10
from vislab.data.lfw import check_pairs, load_faces, parse_pairs
from vislab.data.mnist import load_mnist, read_idx
from vislab.errors import VislabError
from vislab.runs import Run, load_checkpoint


# --- helpers -----------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refused(action: Callable[[], object], *names: object) -> str:
    """Run `action`; it must raise VislabError with a one-line message naming each of `names`."""
    with pytest.raises(VislabError) as caught:
        action()
    message = str(caught.value)
    assert message and "\n" not in message, message
    for name in names:
        assert str(name) in message, f"{name!r} not in {message!r}"
    return message


def jpeg(height: int = 32, width: int = 32, seed: int = 0, channels: int = 3) -> bytes:
    from torchvision.io import encode_jpeg

    image = torch.randint(0, 256, (channels, height, width), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(image, quality=90).numpy().tobytes()


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


# --- LFW pairs files ---------------------------------------------------------------------------

SAME, DIFF = "Ann_Lee 1 2", "Ann_Lee 1 Bo_Wu 3"
HUGE = "9" * 30


@pytest.mark.parametrize(("text", "line", "message"), [
    ("", None, "empty file"),
    ("\n \n\t\n", None, "empty file"),
    (f"x\n{SAME}\n{DIFF}\n", 1, "is not `n` or `folds n`"),
    (f"1 2 3\n{SAME}\n{DIFF}\n", 1, "is not `n` or `folds n`"),
    (f"-1\n{SAME}\n{DIFF}\n", 1, "is not `n` or `folds n`"),
    (f"0\n", 1, "at least 1"),
    (f"1.5\n{SAME}\n{DIFF}\n", 1, "is not `n` or `folds n`"),
    (f"{HUGE}\n{SAME}\n{DIFF}\n", 1, "header promises"),  # huge count: compared, never allocated
    (f"{HUGE} {HUGE}\n{SAME}\n", 1, "header promises"),
    (f"2\n{SAME}\n{DIFF}\n", 1, "but the file has 2 rows"),  # truncated
    (f"1\n{SAME}\n{DIFF}\n{DIFF}\n", 1, "but the file has 3 rows"),  # extra rows
    (f"1\nAnn_Lee 1\n{DIFF}\n", 2, "2 fields"),
    (f"1\n{SAME}\nAnn_Lee 1 Bo_Wu 3 4\n", 3, "5 fields"),
    (f"1\nAnn_Lee 0 2\n{DIFF}\n", 2, "image index '0'"),
    (f"1\nAnn_Lee -1 2\n{DIFF}\n", 2, "image index '-1'"),
    (f"1\nAnn_Lee 1 2.0\n{DIFF}\n", 2, "image index '2.0'"),
    (f"1\nAnn_Lee \u0661 2\n{DIFF}\n", 2, "image index"),  # an Arabic-Indic digit: int() takes it
    (f"1\nAnn_Lee 1 nan\n{DIFF}\n", 2, "image index 'nan'"),
    (f"1\nAnn_Lee inf 2\n{DIFF}\n", 2, "image index 'inf'"),
    (f"1\n../etc 1 2\n{DIFF}\n", 2, "not a plain folder name"),
    (f"1\n{SAME}\n/etc/passwd 1 Bo_Wu 3\n", 3, "not a plain folder name"),
    (f"1\nC:\\Windows 1 2\n{DIFF}\n", 2, "not a plain folder name"),
    (f"1\n..\\..\\x 1 2\n{DIFF}\n", 2, "not a plain folder name"),
    (f"1\nAnn\x01Lee 1 2\n{DIFF}\n", 2, "control characters"),
    (f"2\n{SAME}\n{SAME}\n{DIFF}\nAnn_Lee 2 Cy_Ng 1\n", 3, "duplicate"),
    (f"2\n{SAME}\nAnn_Lee 2 1\n{DIFF}\nAnn_Lee 2 Cy_Ng 1\n", 3, "duplicate"),  # the same pair reversed
    (f"2\n{SAME}\nBo_Wu 1 3\n{DIFF}\nBo_Wu 3 Ann_Lee 1\n", 5, "duplicate"),
    (f"1\nAnn_Lee 1 1\n{DIFF}\n", 2, "with itself"),
    (b"1\nJos\xe9 1 2\n" + DIFF.encode() + b"\n", 2, "not UTF-8"),  # Latin-1
    ("1\nAnn_Lee 1 2\n".encode("utf-16"), 1, "not UTF-8"),
    (b"\x00\x01\x02\xff" * 50, 1, "not UTF-8"),  # binary
    (b"\x89PNG\r\n\x1a\n", 1, "not UTF-8"),
])
def test_pairs_file(tmp_path, text, line, message):
    path = write(tmp_path / "pairs.txt", text)
    where = f"{path}:{line}" if line else path
    assert message in refused(lambda: parse_pairs(path), where)


def test_pairs_file_missing_or_a_folder(tmp_path):
    refused(lambda: parse_pairs(tmp_path / "absent.txt"), tmp_path / "absent.txt")
    refused(lambda: parse_pairs(tmp_path), tmp_path)


def test_pairs_file_with_a_byte_order_mark_is_read(tmp_path):
    path = write(tmp_path / "pairs.txt", "\ufeff" + f"1\n{SAME}\n{DIFF}\n")  # Windows editors add one
    assert [pair.line for pair in parse_pairs(path)] == [2, 3]


def test_view2_may_repeat_a_pair_in_another_fold(tmp_path):
    path = write(tmp_path / "pairs.txt", f"2 1\n{SAME}\n{DIFF}\n{SAME}\n{DIFF}\n")
    assert len(parse_pairs(path)) == 4


# --- LFW image folders ---------------------------------------------------------------------------


@pytest.fixture
def lfw(tmp_path) -> Path:
    """An image folder: Ann_Lee (2 images), Bo_Wu (3), Cy_Ng (1); 250x250 like LFW."""
    image_dir = tmp_path / "root" / "lfw" / "lfw-deepfunneled"
    for name, count in (("Ann_Lee", 2), ("Bo_Wu", 3), ("Cy_Ng", 1)):
        for index in range(1, count + 1):
            write(image_dir / name / f"{name}_{index:04d}.jpg", jpeg(250, 250, seed=index))
    return image_dir


def _faces(image_dir: Path, keys=(("Ann_Lee", 1), ("Bo_Wu", 3)), crop: int | None = 150):
    return lambda: load_faces(image_dir, list(keys), size=24, grayscale=False, crop=crop)


@pytest.mark.parametrize(("damage", "message"), [
    ("empty", "empty file"),
    ("truncated", "not a readable JPEG"),
    ("png", "not a readable JPEG"),
    ("text", "not a readable JPEG"),
    ("small", "smaller than crop"),
    ("missing", "face image not found"),
    ("folder", "face image not found"),  # a folder where the image should be
])
def test_face_image(lfw, damage, message):
    path = lfw / "Bo_Wu" / "Bo_Wu_0003.jpg"
    good = path.read_bytes()
    path.unlink()
    if damage == "folder":
        path.mkdir()
    elif damage != "missing":
        write(path, {"empty": b"", "truncated": good[: len(good) // 3], "png": PNG, "text": "hello",
                     "small": jpeg(100, 100)}[damage])
    assert message in refused(_faces(lfw), path)


def test_face_symlinks_out_of_the_image_folder_are_refused(lfw, tmp_path):
    outside = write(tmp_path / "elsewhere" / "secret.jpg", jpeg(250, 250))
    image = lfw / "Bo_Wu" / "Bo_Wu_0003.jpg"
    image.unlink()
    image.symlink_to(outside)
    assert "outside" in refused(_faces(lfw), image)
    # a person folder linked to a folder elsewhere
    shutil.copytree(lfw / "Ann_Lee", tmp_path / "elsewhere" / "Ann_Lee")
    shutil.rmtree(lfw / "Ann_Lee")
    (lfw / "Ann_Lee").symlink_to(tmp_path / "elsewhere" / "Ann_Lee")
    assert "outside" in refused(_faces(lfw, keys=[("Ann_Lee", 1)]), lfw / "Ann_Lee")


def test_face_symlinks_inside_the_image_folder_are_followed(lfw):
    image = lfw / "Bo_Wu" / "Bo_Wu_0003.jpg"
    image.unlink()
    image.symlink_to(lfw / "Ann_Lee" / "Ann_Lee_0001.jpg")
    assert _faces(lfw)().shape == (2, 3, 24, 24)


@pytest.mark.parametrize(("row", "message"), [
    ("Dee_Po 1 2", "no folder 'Dee_Po'"),
    ("Ann_Lee 1 3", "has 2 images"),
    (f"Ann_Lee 1 {HUGE}", "no image"),  # a huge index: compared, never formatted into a path
])
def test_pairs_naming_images_that_do_not_exist(lfw, tmp_path, row, message):
    path = write(tmp_path / "pairs.txt", f"1\n{row}\n{DIFF}\n")
    assert message in refused(lambda: check_pairs(lfw, parse_pairs(path), path), f"{path}:2")


# --- IDX (MNIST) -----------------------------------------------------------------------------


def idx(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


GOOD_IDX = idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "too short"),
    (b"\x00\x00\x08", "too short"),
    (b"\x08\x03" + GOOD_IDX[2:], "not an IDX file"),  # wrong magic
    (b"PK\x03\x04" + GOOD_IDX[4:], "not an IDX file"),  # a zip
    (b"\x00\x00\x0d" + GOOD_IDX[3:], "value type 0x0d"),  # float32 values
    (b"\x00\x00\x0c" + GOOD_IDX[3:], "value type 0x0c"),  # int32 values
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\xff" + b"\x00" * 64, "255 dimensions"),
    (GOOD_IDX[:10], "truncated IDX header"),
    (GOOD_IDX[:-1], "truncated"),
    (GOOD_IDX + b"\x00", "trailing bytes"),
    (bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3 + b"\x00" * 64, "truncated"),  # 2**96 values claimed
    (bytes([0, 0, 8, 1]) + b"\xff\xff\xff\xff", "truncated"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    (gzip.compress(GOOD_IDX)[:-6], "corrupt gzip"),  # truncated download
    (gzip.compress(b""), "too short"),
    (gzip.compress(b"\x08\x03" + GOOD_IDX[2:]), "not an IDX file"),
])
def test_idx_file(tmp_path, data, message):
    path = write(tmp_path / "train-images-idx3-ubyte", data)
    assert message in refused(lambda: read_idx(path), path)


def test_idx_file_missing_or_a_folder(tmp_path):
    refused(lambda: read_idx(tmp_path / "absent"), tmp_path / "absent")
    refused(lambda: read_idx(tmp_path), tmp_path)


def mnist_root(root: Path, count: int = 10, **replace: bytes) -> Path:
    """A data root with the four MNIST files (`count` images per split); `replace` overrides
    one file's bytes by stem, e.g. train_labels=b''."""
    images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write(root / "mnist" / f"{prefix}-images-idx3-ubyte", replace.get(f"{split}_images", idx(images)))
        write(root / "mnist" / f"{prefix}-labels-idx1-ubyte", replace.get(f"{split}_labels", idx(labels)))
    return root


@pytest.mark.parametrize(("stem", "data", "message"), [
    ("train_images", idx(np.zeros((10, 27, 28), np.uint8)), "expected (N, 28, 28)"),
    ("train_images", idx(np.zeros((10, 784), np.uint8)), "expected (N, 28, 28)"),
    ("train_labels", idx(np.zeros((10, 1), np.uint8)), "expected (N,)"),
    ("train_labels", idx(np.zeros(9, np.uint8)), "9 labels"),
    ("train_labels", idx(np.full(10, 10, np.uint8)), "label 10"),
    ("train_labels", idx(np.zeros(10, np.uint8))[:-3], "truncated"),
    ("train_images", b"", "too short"),
])
def test_mnist_files(tmp_path, stem, data, message):
    root = mnist_root(tmp_path, **{stem: data})
    name = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte"}[stem]
    assert message in refused(lambda: load_mnist(root, "train"), name)


def test_mnist_file_missing(tmp_path):
    root = mnist_root(tmp_path)
    (root / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    refused(lambda: load_mnist(root, "test"), root / "mnist" / "t10k-labels-idx1-ubyte")


# --- CIFAR-10: JPEG folders and archives ---------------------------------------------------------


def cifar_folder(root: Path, split: str = "train", per_class: int = 1) -> Path:
    for label, name in enumerate(CIFAR10_CLASSES):
        for i in range(per_class):
            write(root / "cifar10-jpeg" / split / name / f"{i:04d}.jpg", jpeg(seed=label * 10 + i))
    return root / "cifar10-jpeg" / split


@pytest.mark.parametrize(("damage", "message"), [
    ("empty", "empty file"),
    ("truncated", "not a readable JPEG"),
    ("png", "not a readable JPEG"),
    ("size", "CIFAR-10 images are 32x32"),
])
def test_cifar_folder_image(tmp_path, damage, message):
    folder = cifar_folder(tmp_path)
    path = folder / "cat" / "0000.jpg"
    good = path.read_bytes()
    write(path, {"empty": b"", "truncated": good[:100], "png": PNG, "size": jpeg(16, 48)}[damage])
    assert message in refused(lambda: load_cifar10(tmp_path, "train"), path)


def test_cifar_folder_layout(tmp_path):
    folder = cifar_folder(tmp_path)
    shutil.rmtree(folder / "ship")  # a class missing
    assert "no images of class ship" in refused(lambda: load_cifar10(tmp_path, "train"), folder)
    write(folder / "ship" / "0000.jpg", jpeg())
    write(folder / "airplain" / "0000.jpg", jpeg())  # a misspelt class
    assert "did you mean: airplane" in refused(lambda: load_cifar10(tmp_path, "train"), folder / "airplain")
    shutil.rmtree(tmp_path / "cifar10-jpeg")
    refused(lambda: load_cifar10(tmp_path, "train"), tmp_path / "cifar10-jpeg")


def test_cifar_symlinks_out_of_the_split_folder_are_refused(tmp_path):
    folder = cifar_folder(tmp_path)
    outside = write(tmp_path / "elsewhere" / "x.jpg", jpeg())
    image = folder / "cat" / "0000.jpg"
    image.unlink()
    image.symlink_to(outside)
    assert "outside" in refused(lambda: load_cifar10(tmp_path, "train"), image)
    image.unlink()
    image.symlink_to(folder / "dog" / "0000.jpg")  # inside: followed
    assert len(load_cifar10(tmp_path, "train")) == 10
    shutil.move(folder / "truck", tmp_path / "elsewhere" / "truck")
    (folder / "truck").symlink_to(tmp_path / "elsewhere" / "truck")
    assert "outside" in refused(lambda: load_cifar10(tmp_path, "train"), folder / "truck")


def _archive_members(**extra: bytes) -> dict[str, bytes]:
    return {**{f"test/{name}/0000.jpg": jpeg(seed=i) for i, name in enumerate(CIFAR10_CLASSES)}, **extra}


@pytest.mark.parametrize(("members", "message"), [
    (_archive_members(**{"test/cat/0001.jpg": b"not a jpeg"}), "not a readable JPEG"),
    (_archive_members(**{"test/cat/0001.jpg": b""}), "empty file"),
    (_archive_members(**{"train/cat/0001.jpg": jpeg()}), "is not under test/<class>/"),
    (_archive_members(**{"test/kitten/0001.jpg": jpeg()}), "unknown class folder 'kitten'"),
    (_archive_members(**{"../test/cat/0001.jpg": jpeg()}), "escapes"),
    (_archive_members(**{"/abs/test/cat/0001.jpg": jpeg()}), "escapes"),
    (_archive_members(**{"test/cat/../../test/cat/0001.jpg": jpeg()}), "escapes"),
    ({"test/cat/0000.jpg": jpeg()}, "no images of class airplane"),
    ({}, "no images of class"),
])
def test_cifar_archive(tmp_path, members, message):
    path = write_archive(tmp_path, "test", members)
    assert message in refused(lambda: load_cifar10(tmp_path, "test"), path)


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "empty"])
def test_cifar_archive_damaged(tmp_path, damage):
    path = write_archive(tmp_path, "test", _archive_members())
    data = path.read_bytes()
    write(path, {"truncated": data[: len(data) // 2], "not gzip": b"hello" * 20, "empty": b""}[damage])
    assert "corrupt or unreadable archive" in refused(lambda: load_cifar10(tmp_path, "test"), path)


# --- CIFAR-10: python batches (restricted unpickler) ---------------------------------------------


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class HugeArray:
    """Pickles as a numpy array whose header claims 2**40 x 3072 bytes, holding 10."""

    def __reduce__(self):
        core = getattr(np, "_core", None) or np.core
        return (core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                (1, (2**40, 3072), np.dtype("uint8"), False, b"\x00" * 10))


def _batch(data=None, labels=None, **extra) -> bytes:
    data = np.zeros((2, 3072), np.uint8) if data is None else data
    return pickle.dumps({b"data": data, b"labels": [0, 1] if labels is None else labels, **extra}, protocol=2)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "corrupt pickle"),
    (_batch()[:40], "corrupt pickle"),  # truncated
    (b"\x80\x04garbage", "corrupt pickle"),
    (b"PK\x03\x04" + b"\x00" * 30, "corrupt pickle"),  # a zip, e.g. a torch file
    (pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch dict"),
    (pickle.dumps({b"labels": [0]}), "'data' is not a uint8 array"),
    (_batch(data=np.zeros((2, 3072), np.float32)), "'data' is not a uint8 array"),
    (_batch(data=np.zeros((2, 100), np.uint8)), "shape (N, 3072)"),
    (_batch(data=np.zeros((2, 3, 32, 32), np.uint8)), "shape (N, 3072)"),
    (_batch(labels=[0]), "2 images but 1 labels"),
    (_batch(data=HugeArray()), "corrupt pickle"),  # a huge count: refused, never allocated
    (_batch(labels=[0, 10]), "outside 0..9"),
    (_batch(labels=[0, -1]), "outside 0..9"),
    (_batch(labels=[0, float("nan")]), "'labels' is not a list of integers"),
    (_batch(labels=[0, float("inf")]), "'labels' is not a list of integers"),
    (_batch(labels=[0, 1.5]), "'labels' is not a list of integers"),
    (_batch(labels=["cat", "dog"]), "'labels' is not a list of integers"),
])
def test_cifar_python_batch(tmp_path, payload, message):
    path = write(tmp_path / "cifar-10-batches-py" / "test_batch", payload)
    assert message in refused(lambda: load_cifar10(tmp_path, "test"), path)


def test_cifar_python_batch_undamaged_loads(tmp_path):  # the cases above differ from this one only
    write(tmp_path / "cifar-10-batches-py" / "test_batch", _batch())
    assert len(load_cifar10(tmp_path, "test")) == 2


def test_cifar_python_batch_that_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "cifar-10-batches-py" / "test_batch", _batch(data=RunsCode(marker)))
    assert "refused to load global" in refused(lambda: load_cifar10(tmp_path, "test"), path)
    assert not marker.exists()


def test_cifar_python_batches_missing_one(tmp_path):
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_5"):
        write(tmp_path / "cifar-10-batches-py" / name, _batch())
    refused(lambda: load_cifar10(tmp_path, "train"), tmp_path / "cifar-10-batches-py" / "data_batch_4")


# --- the course's pickles (restricted unpickler in data/apml.py) ---------------------------------


def _course(items) -> bytes:
    return pickle.dumps(items, protocol=2)


def _images(count: int = 2, value: float = 0.0) -> list[torch.Tensor]:
    return [torch.full((3, 32, 32), value) for _ in range(count)]


def _with(image: torch.Tensor, where: tuple[int, int, int], value: float) -> torch.Tensor:
    image = image.clone()
    image[where] = value
    return image


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "not a readable course pickle"),
    (_course([(torch.zeros(3, 32, 32), 0)] * 3)[:60], "not a readable course pickle"),  # truncated
    (b"hello world", "not a readable course pickle"),
    (_course({"images": 1}), "not a non-empty list"),
    (_course([]), "not a non-empty list"),
    (_course([(torch.zeros(3, 28, 28), 0)]), "item 0 is not a (3x32x32 tensor, label) pair"),
    (_course([(torch.zeros(32, 32, 3), 0)]), "item 0 is not a (3x32x32 tensor, label) pair"),
    (_course([(torch.zeros(3, 32, 32), 0), (torch.zeros(3, 32, 32),)]), "item 1 is not"),
    (_course([(np.zeros((3, 32, 32), np.float32), 0)]), "refused"),  # numpy: not on the list
    (_course([(torch.zeros(3, 32, 32), 3)]), "item 0 has label 3"),
    (_course([(torch.zeros(3, 32, 32), -1)]), "item 0 has label -1"),
    (_course([(torch.zeros(3, 32, 32), "cat")]), "item 0 has label 'cat'"),
    (_course([(torch.zeros(3, 32, 32), 1.5)]), "item 0 has label 1.5"),
    (_course([(torch.zeros(3, 32, 32), float("nan"))]), "item 0 has label nan"),
    (_course([(_with(torch.zeros(3, 32, 32), (0, 1, 2), math.nan), 0)]), "item 0 has NaN or infinite values"),
    (_course([(torch.zeros(3, 32, 32), 0), (_with(torch.zeros(3, 32, 32), (2, 0, 0), math.inf), 1)]),
     "item 1 has NaN or infinite values"),
    (_course([(torch.full((3, 32, 32), 255.0), 0)]), "item 0 has values outside [-1, 1]"),  # unnormalised
    (_course([(torch.zeros(3, 32, 32, dtype=torch.complex64), 0)]), "item 0 is not a real-valued image"),
])
def test_course_pickle(tmp_path, payload, message):
    path = write(tmp_path / "train.pickle", payload)
    assert message in refused(lambda: load_course_pickle(path), path)


def test_course_pickle_that_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "train.pickle", _course([(torch.zeros(3, 32, 32), 0), RunsCode(marker)]))
    assert "refused" in refused(lambda: load_course_pickle(path), path)
    assert not marker.exists()


def test_course_pickle_missing(tmp_path):
    refused(lambda: load_course_pickle(tmp_path / "absent.pickle"), tmp_path / "absent.pickle")


# --- YAML configs and --key=value overrides -----------------------------------------------------


def _cnn_config():
    from vislab.studies.cnn import Config

    return Config


@pytest.mark.parametrize(("text", "message"), [
    (b"epochs: [1\n", "not valid YAML"),
    (b"epochs: 3\n\tseed: 1\n", "not valid YAML"),  # a tab
    ("epochs: 3\nseed: 1\n".encode("utf-16"), "not UTF-8"),
    ("lr: 0.1\n# caf\xe9\n".encode("latin-1"), "not UTF-8"),
    (b"- epochs\n- 3\n", "must be a mapping"),
    (b"just a string\n", "must be a mapping"),
    (b"42\n", "must be a mapping"),
    (b"epochs: 3\nepochs: 5\n", "duplicate key 'epochs'"),
    (b"epochs: three\n", "config key 'epochs'"),
    (b"epochz: 3\n", "unknown config key 'epochz'"),
    (b"lr: .nan\n", "config key 'lr': nan"),
    (b"lr: .inf\n", "config key 'lr': inf"),
    (b"lr: -.inf\n", "config key 'lr': -inf"),
    (b"epochs: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    (b"seed: !!python/name:os.system\n", "not valid YAML"),
    (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", "anchors"),  # the start of a 'billion laughs'
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than"),  # the loader would recurse 5000 deep
    (b"null: 3\n", "bad config"),
    (b"out: ${oc.env:HOME}/runs\n", "interpolations"),  # would copy an environment variable into the run
    (b"epochs: 2\n---\nseed: 1\n", "another document"),
    (b"epochs: 2\x00\n", "not valid YAML"),
])
def test_yaml_config(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "my.yaml", text)
    assert message in refused(lambda: load_config(_cnn_config(), yaml_file=path), path)
    assert not (tmp_path / "pwned").exists()


def test_yaml_config_missing_or_a_folder(tmp_path):
    refused(lambda: load_config(_cnn_config(), yaml_file=tmp_path / "absent.yaml"), tmp_path / "absent.yaml")
    refused(lambda: load_config(_cnn_config(), yaml_file=tmp_path), tmp_path)


def test_empty_yaml_config_means_the_defaults(tmp_path):
    config = load_config(_cnn_config(), yaml_file=write(tmp_path / "empty.yaml", b"# nothing set\n"))
    assert config == _cnn_config()()


@pytest.mark.parametrize(("argv", "message"), [
    (["--epochs"], "config key 'epochs'"),  # a bare flag means true: not an int
    (["--epochs=three"], "config key 'epochs'"),
    (["--epochs=1e99"], "config key 'epochs'"),
    (["--epochz=3"], "unknown config key 'epochz'"),
    (["--lr=nan"], "config key 'lr': nan"),
    (["--lr=inf"], "config key 'lr': inf"),
    (["--lr=-Infinity"], "config key 'lr'"),
    (["--epochs=2", "--epochs=3"], "'epochs' is given twice"),
    (["--epochs=2", "--epochs", "3"], "'epochs' is given twice"),
    (["--model-name=Q1_1", "--model_name=Q1_2"], "'model_name' is given twice"),
    (["--=3"], "override"),
    (["--.epochs=3"], "override"),
    (["epochs=3"], "unexpected argument"),
    (["--seed=-1"], "config key 'seed'"),
    (["--seed=" + "9" * 400], "config key 'seed'"),
])
def test_overrides(argv, message):
    assert message in refused(lambda: load_config(_cnn_config(), overrides=split_overrides(argv)))


# --- checkpoints ---------------------------------------------------------------------------------


def _cnn_state(**changes) -> dict:
    """A cnn checkpoint dict for the 62,006-parameter Q1_1 net, as `fit` writes it."""
    from vislab.models.registry import model_entry

    Config = _cnn_config()
    config = to_dict(Config(data_root="builtin", model_name="Q1_1"))
    model = model_entry("Q1_1").build()
    state = {"model": model.state_dict(), "config": config, "epoch": 1}
    state.update(changes)
    return {key: value for key, value in state.items() if value is not None}


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class EvilCheckpoint:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "cannot load checkpoint"),
    (b"hello", "cannot load checkpoint"),
    ("truncated", "cannot load checkpoint"),
    (b"PK\x03\x04" + b"\x00" * 100, "cannot load checkpoint"),
    (pickle.dumps({"model": {}}), "cannot load checkpoint"),  # an old-style raw pickle
    ("evil", "refused unread"),
    ("list", "is not a dict"),
    ("tensor", "is not a dict"),
])
def test_checkpoint_file(tmp_path, monkeypatch, payload, message):
    monkeypatch.chdir(tmp_path)
    if payload == "truncated":
        payload = _torch_bytes(_cnn_state())[:5000]
    elif payload == "evil":
        payload = _torch_bytes({"model": EvilCheckpoint()})
    elif payload == "list":
        payload = _torch_bytes([1, 2, 3])
    elif payload == "tensor":
        payload = _torch_bytes(torch.zeros(3))
    path = write(tmp_path / "x.ckpt", payload)
    assert message in refused(lambda: load_checkpoint(path), path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_missing_or_a_run_folder_without_one(tmp_path):
    refused(lambda: load_checkpoint(tmp_path / "absent.ckpt"), tmp_path / "absent.ckpt")
    refused(lambda: load_checkpoint(tmp_path), tmp_path / "checkpoints" / "best.ckpt")


# --- the commands: exit 2, one line naming the file, no traceback, nothing left behind -----------


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "runs"


def command_refuses(argv: list[str], out: Path, capsys, *names: object) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("vislab: error:")]
    assert len(errors) == 1 and captured.err.rstrip().endswith(errors[0]), captured.err
    assert "Traceback" not in captured.err
    for name in names:
        assert str(name) in errors[0], f"{name!r} not in {errors[0]!r}"
    left = [path for path in out.rglob("*")] if out.exists() else []
    assert left == [], f"left behind: {left}"
    return errors[0]


@pytest.fixture(scope="module")
def lfw_root(tmp_path_factory) -> Path:
    from vislab.data.builtin import synthetic_lfw

    root = tmp_path_factory.mktemp("lfw") / "root"
    shutil.copytree(synthetic_lfw(), root)
    return root


FACES = ["--epochs=1", "--batch-size=16", "--pairs-per-epoch=0", "--image-size=24", "--crop=160",
         "--num-threads=1"]


@pytest.mark.parametrize(("text", "line"), [
    ("", None),
    ("3\nPerson_A_Test00 1 2\n", 1),
    ("1\nPerson_A_Test00 1 2\nPerson_A_Test00 1 ../../etc 1\n", 3),
    ("1\nPerson_A_Test00 1 2\nPerson_A_Test00 1 Nobody_Here 1\n", 3),
    ("1\nPerson_A_Test00 1 99\nPerson_A_Test00 1 Person_B_Test01 1\n", 2),
    (b"1\nPerson_A_Test00 1 2\nJos\xe9 1 Person_B_Test01 1\n", 3),
])
def test_run_faces_with_a_bad_pairs_file(lfw_root, tmp_path, out, capsys, text, line):
    path = write(tmp_path / "pairs.txt", text)
    where = f"{path}:{line}" if line else path
    command_refuses(["run", "faces", f"--data-root={lfw_root}", f"--pairs-file={path}", *FACES, f"--out={out}"],
                    out, capsys, where)


@pytest.mark.parametrize("damage", ["corrupt image", "symlinked image", "training pairs file"])
def test_run_faces_with_a_damaged_data_root(lfw_root, tmp_path, out, capsys, damage):
    root = tmp_path / "root"
    shutil.copytree(lfw_root, root, symlinks=True)
    image_dir = root / "lfw" / "lfw-deepfunneled"
    if damage == "training pairs file":
        bad = write(root / "lfw" / "pairsDevTrain.txt", "2\nPerson_A_Train00 1\n")
        name = f"{bad}:2"
    else:
        person = next(iter(line.split()[0] for line in (root / "lfw" / "pairsDevTest.txt").read_text().splitlines()[1:]))
        name = image_dir / person / f"{person}_0001.jpg"
        name.unlink()
        if damage == "corrupt image":
            write(name, b"\xff\xd8\xff\xe0 not really a jpeg")
        else:
            name.symlink_to(write(tmp_path / "elsewhere.jpg", jpeg(250, 250)))
    command_refuses(["run", "faces", f"--data-root={root}", *FACES, f"--out={out}"], out, capsys, name)


def test_run_latent_with_bad_mnist_files(tmp_path, out, capsys):
    root = mnist_root(tmp_path / "root", train_labels=idx(np.zeros(10, np.uint8))[:-1])
    command_refuses(["run", "latent", f"--data-root={root}", "--epochs=1", f"--out={out}"], out, capsys,
                    root / "mnist" / "train-labels-idx1-ubyte")
    root = mnist_root(tmp_path / "root2", test_images=b"\x00\x00\x08\x03" + b"\xff" * 12)
    command_refuses(["run", "latent", f"--data-root={root}", "--epochs=1", f"--out={out}"], out, capsys,
                    root / "mnist" / "t10k-images-idx3-ubyte")


def test_run_cnn_with_a_bad_cifar_folder_archive_or_batch(tmp_path, out, capsys):
    folder = cifar_folder(tmp_path / "a")
    cifar_folder(tmp_path / "a", "test")
    write(folder / "frog" / "0000.jpg", b"")
    command_refuses(["run", "cnn", f"--data-root={tmp_path / 'a'}", f"--out={out}"], out, capsys,
                    folder / "frog" / "0000.jpg")
    archive = write_archive(tmp_path / "b", "train", _archive_members(**{"../evil.jpg": jpeg()}))
    command_refuses(["run", "cnn", f"--data-root={tmp_path / 'b'}", f"--out={out}"], out, capsys, archive)
    marker = tmp_path / "pwned"
    batch = write(tmp_path / "c" / "cifar-10-batches-py" / "test_batch", _batch(data=RunsCode(marker)))
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        write(tmp_path / "c" / "cifar-10-batches-py" / name, _batch())
    command_refuses(["run", "cnn", f"--data-root={tmp_path / 'c'}", f"--out={out}"], out, capsys, batch)
    assert not marker.exists()


@pytest.mark.parametrize("which", ["train", "dev"])
def test_run_imbalance_with_a_bad_course_pickle(tmp_path, out, capsys, which):
    good = write(tmp_path / "good.pickle", _course([(torch.zeros(3, 32, 32), i % 3) for i in range(6)]))
    bad = write(tmp_path / "bad.pickle", _course([(torch.full((3, 32, 32), math.nan), 0)]))
    pickles = {"train": bad, "dev": good} if which == "train" else {"train": good, "dev": bad}
    command_refuses(["run", "imbalance", "--data-root=builtin", f"--train-pickle={pickles['train']}",
                     f"--dev-pickle={pickles['dev']}", "--epochs=1", f"--out={out}"], out, capsys, bad)


def test_imbalance_reads_the_course_checkpoint_before_training(tmp_path, out, capsys, monkeypatch):
    """The course's pre_trained.ckpt sits in the data root; a damaged one must fail the run
    before training, not after it."""
    from vislab.studies import imbalance

    root = tmp_path / "root"
    bad = write(root / imbalance.COURSE_CHECKPOINT, b"PK\x03\x04 truncated download")
    real_load_data = imbalance.load_data
    monkeypatch.setattr(imbalance, "load_data", lambda config: real_load_data(
        type(config)(**{**config.__dict__, "data_root": "builtin"})))

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained before reading the course checkpoint")

    monkeypatch.setattr(imbalance, "train", must_not_train)
    command_refuses(["run", "imbalance", f"--data-root={root}", "--epochs=1", f"--out={out}"], out, capsys, bad)


@pytest.mark.parametrize(("text", "name"), [
    (b"epochs: [1\n", "my.yaml"),
    (b"lr: .nan\n", "my.yaml"),
    (b"epochs: 2\nepochs: 3\n", "my.yaml"),
    ("x: caf\xe9\n".encode("latin-1"), "my.yaml"),
])
def test_run_with_a_bad_yaml_config(tmp_path, out, capsys, text, name):
    path = write(tmp_path / "my.yaml", text)
    command_refuses(["run", "cnn", "--data-root=builtin", f"--config={path}", f"--out={out}"], out, capsys, path)


@pytest.mark.parametrize(("study", "looked_for"), [
    ("cnn", "cifar10-jpeg"), ("imbalance", "cifar10-jpeg"), ("latent", "mnist"), ("faces", "lfw-deepfunneled"),
])
@pytest.mark.parametrize("root", ["missing", "a file", "empty"])
def test_run_with_a_data_root_that_is_not_one(tmp_path, out, capsys, study, looked_for, root):
    path = tmp_path / "data"
    if root == "a file":
        write(path, b"not a folder")
    elif root == "empty":
        path.mkdir()
    assert looked_for in command_refuses(["run", study, f"--data-root={path}", "--epochs=1", f"--out={out}"],
                                         out, capsys, path)


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_run_with_an_out_folder_it_cannot_write(tmp_path, capsys, kind):
    out = tmp_path / "runs"
    if kind == "a file":
        write(out, b"not a folder")
    else:
        (out / "cnn").mkdir(parents=True)
        (out / "cnn").chmod(0o500)
        if os.access(out / "cnn", os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is writable")
    assert main(["run", "cnn", "--data-root=builtin", f"--out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vislab: error: cannot ") and str(out) in err and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--lr=nan"], "config key 'lr': nan"),
    (["--epochs=2", "--epochs=3"], "given twice"),
    (["--epochs"], "config key 'epochs'"),
])
def test_run_with_bad_overrides(out, capsys, argv, message):
    assert message in command_refuses(["run", "cnn", "--data-root=builtin", *argv, f"--out={out}"], out, capsys)


@pytest.mark.parametrize("damage", ["empty", "truncated", "evil", "no model", "model not a dict",
                                    "wrong shape", "NaN weights", "unknown config key", "no config"])
def test_eval_with_a_bad_checkpoint(tmp_path, out, capsys, monkeypatch, damage):
    monkeypatch.chdir(tmp_path)
    state = _cnn_state()
    first = next(iter(state["model"]))
    payload = {
        "empty": lambda: b"",
        "truncated": lambda: _torch_bytes(state)[:3000],
        "evil": lambda: _torch_bytes({"model": EvilCheckpoint(), "config": state["config"]}),
        "no model": lambda: _torch_bytes(_cnn_state(model=None)),
        "model not a dict": lambda: _torch_bytes(_cnn_state(model=[1, 2])),
        "wrong shape": lambda: _torch_bytes(_cnn_state(model={**state["model"], first: torch.zeros(1)})),
        "NaN weights": lambda: _torch_bytes(_cnn_state(model={**state["model"], first: state["model"][first] * math.nan})),
        "unknown config key": lambda: _torch_bytes(_cnn_state(config={**state["config"], "epochz": 1})),
        "no config": lambda: _torch_bytes(_cnn_state(config=None)),
    }[damage]()
    path = write(tmp_path / "x.ckpt", payload)
    command_refuses(["eval", "cnn", f"--checkpoint={path}", f"--out={out}"], out, capsys, path)
    assert not (tmp_path / "pwned").exists()


# --- run folders given to eval / report / --resume -----------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished cnn run (2 epochs on built-in data): a template to damage."""
    from vislab.cli import run_study

    out = tmp_path_factory.mktemp("finished")
    _, path = run_study("cnn", overrides=["data_root=builtin", "model_name=Q1_1", "epochs=2", "batch_size=64",
                                          "num_threads=1", f"out={out}"])
    return path


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "cnn" / finished_run.name
    shutil.copytree(finished_run, copy)
    return copy


def _damage_run(run: Path, damage: str) -> Path:
    """Damage one file of a run folder; returns the path the message must name."""
    if damage == "no config.yaml":
        (run / "config.yaml").unlink()
        return run
    target = {"config.yaml invalid": "config.yaml", "config.yaml not UTF-8": "config.yaml",
              "config.yaml a list": "config.yaml", "config.yaml unknown key": "config.yaml",
              "meta.json invalid": "meta.json", "meta.json a string": "meta.json",
              "summary.json a list": "summary.json", "metrics.csv not UTF-8": "metrics.csv",
              "table not UTF-8": "tables/per_class.csv", "no best.ckpt": "checkpoints/best.ckpt",
              "last.ckpt missing": "checkpoints/last.ckpt", "last.ckpt truncated": "checkpoints/last.ckpt",
              "best.ckpt empty": "checkpoints/best.ckpt"}[damage]
    path = run / target
    data = {"config.yaml invalid": b"epochs: [2\n", "config.yaml not UTF-8": "x: caf\xe9\n".encode("latin-1"),
            "config.yaml a list": b"- 1\n- 2\n", "meta.json invalid": b"{\"status\": ",
            "config.yaml unknown key": b"epochz: 3\n",
            "summary.json a list": b"[1, 2]\n", "meta.json a string": b"\"running\"\n",
            "table not UTF-8": b"class,acc\ncat,0.5\xff\n",
            "metrics.csv not UTF-8": b"epoch,lr\n1,0.1\xff\xfe\n", "best.ckpt empty": b""}.get(damage)
    if damage in ("last.ckpt missing", "no best.ckpt"):
        path.unlink()
    elif damage == "last.ckpt truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif damage == "config.yaml unknown key":
        path.write_bytes(path.read_bytes() + data)
    else:
        write(path, data)
    return path


REPORT_DAMAGE = ["no config.yaml", "config.yaml invalid", "config.yaml not UTF-8", "config.yaml a list",
                 "meta.json invalid", "meta.json a string", "summary.json a list", "metrics.csv not UTF-8",
                 "table not UTF-8"]
RESUME_DAMAGE = ["no config.yaml", "config.yaml invalid", "config.yaml not UTF-8", "config.yaml a list",
                 "config.yaml unknown key", "last.ckpt missing", "last.ckpt truncated"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", REPORT_DAMAGE)
def test_report_on_a_damaged_run_folder(run_copy, out, capsys, damage):
    name = _damage_run(run_copy, damage)
    (run_copy / "report.html").unlink()
    before = _snapshot(run_copy)
    command_refuses(["report", str(run_copy)], out, capsys, name)
    assert _snapshot(run_copy) == before  # nothing written, the old files untouched


@pytest.mark.parametrize("damage", RESUME_DAMAGE)
def test_resume_a_damaged_run_folder(run_copy, out, capsys, damage):
    name = _damage_run(run_copy, damage)
    before = _snapshot(run_copy)
    command_refuses(["run", "cnn", f"--resume={run_copy}"], out, capsys, name)
    assert _snapshot(run_copy) == before


def test_resume_refuses_another_studys_folder_and_a_config_file(run_copy, tmp_path, out, capsys):
    before = _snapshot(run_copy)
    assert "cnn run" in command_refuses(["run", "faces", f"--resume={run_copy}"], out, capsys, run_copy)
    yaml_file = write(tmp_path / "my.yaml", b"epochs: 3\n")
    assert "--config" in command_refuses(["run", "cnn", f"--resume={run_copy}", f"--config={yaml_file}"], out, capsys)
    command_refuses(["run", "cnn", f"--resume={tmp_path / 'absent'}"], out, capsys, tmp_path / "absent")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("damage", ["no best.ckpt", "best.ckpt empty"])
def test_eval_on_a_damaged_run_folder(run_copy, out, capsys, damage):
    name = _damage_run(run_copy, damage)
    command_refuses(["eval", "cnn", f"--checkpoint={run_copy}", f"--out={out}"], out, capsys, name)


@pytest.mark.parametrize("entry", ["optimizer", "fit_state", "model"])
def test_resume_from_a_checkpoint_missing_an_entry_marks_the_run_failed(run_copy, out, capsys, entry):
    last = run_copy / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    del state[entry]
    last.write_bytes(_torch_bytes(state))
    checkpoints = _snapshot(run_copy / "checkpoints")
    command_refuses(["run", "cnn", f"--resume={run_copy}"], out, capsys, last)
    assert _snapshot(run_copy / "checkpoints") == checkpoints
    assert yaml.safe_load((run_copy / "meta.json").read_text())["status"] == "failed"


def test_report_escapes_html_from_the_run_files(run_copy, capsys):
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["model_name"] = "<script>alert(1)</script>"
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    summary = (run_copy / "summary.json").read_text()
    (run_copy / "summary.json").write_text(summary.replace('"Q1_1"', '"<img src=x onerror=alert(2)>"', 1))
    assert main(["report", str(run_copy)]) == 0
    html = (run_copy / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x" in html


# --- --debug, and the package itself -------------------------------------------------------------


def test_debug_shows_the_traceback_instead(tmp_path, capsys):
    path = write(tmp_path / "pairs.txt", "")
    with pytest.raises(VislabError, match="empty file"):
        main(["run", "faces", "--data-root=builtin", f"--pairs-file={path}", f"--out={tmp_path}", "--debug"])
    # the real command (test_cli checks the same error without --debug: one line, no traceback)
    done = subprocess.run([sys.executable, "-m", "vislab", "--debug", "report", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr and "VislabError" in done.stderr


def test_no_eval_exec_or_unsafe_loading_in_the_package():
    """No eval/exec; YAML only through safe loaders; torch.load only with weights_only=True;
    no pickle.load(s) (the restricted unpicklers subclass pickle.Unpickler instead)."""
    import ast
    import importlib

    package = Path(__file__).resolve().parents[1] / "src" / "vislab"
    found = []
    for source in sorted(package.rglob("*.py")):
        module_name = ".".join(("vislab", *source.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not isinstance(node, ast.Call):
                continue
            func, keywords = node.func, {k.arg: k.value for k in node.keywords}
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if isinstance(func, ast.Name) and name in ("eval", "exec", "compile"):
                bad = True
            elif owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                loader = keywords.get("Loader")
                loader_class = (getattr(yaml, loader.attr) if isinstance(loader, ast.Attribute)
                                else getattr(importlib.import_module(module_name), loader.id) if isinstance(loader, ast.Name)
                                else None)
                bad = not (isinstance(loader_class, type) and issubclass(loader_class, yaml.SafeLoader))
            elif owner == "torch" and name == "load":
                flag = keywords.get("weights_only")
                bad = not (isinstance(flag, ast.Constant) and flag.value is True)
            else:
                bad = owner in ("pickle", "dill", "marshal", "shelve") and name in ("load", "loads", "open")
            if bad:
                found.append(f"{source.relative_to(package)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert found == []
