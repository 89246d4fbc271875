"""CIFAR-10 from a JPEG copy (folders or the tar.gz) or the original python batches.

Sources, tried in this order under the data root:

    cifar10-jpeg/<split>/<class>/*.jpg          unpacked JPEG copy
    cifar10-jpeg/cifar10-jpeg-<split>.tar.gz    the same, read straight from the archive
    cifar-10-batches-py/                        data_batch_1..5 / test_batch (pickled dicts)

JPEG images come out by class, then file name (the JPEG copy has no interleaved order); the
python batches keep their original order. The pickled batches are read with an unpickler
that builds numpy arrays and plain containers and refuses everything else, so a hostile
file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from vislab.data import ImageSet, check_links_inside, decode_jpegs
from vislab.data.cache import cached_tensors
from vislab.errors import VislabError, did_you_mean

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SPLITS = ("train", "test")
IMAGE_SHAPE = (3, 32, 32)
PICKLE_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_cifar10(root: Path, split: str) -> ImageSet:
    """CIFAR-10 `split` ("train" or "test"): images (N, 3, 32, 32) uint8, labels 0..9."""
    if split not in SPLITS:
        raise VislabError(f"unknown CIFAR-10 split {split!r}: use train or test{did_you_mean(split, SPLITS)}")
    root = Path(root)
    folder = root / "cifar10-jpeg" / split
    archive = root / "cifar10-jpeg" / f"cifar10-jpeg-{split}.tar.gz"
    batches = root / "cifar-10-batches-py"
    if folder.is_dir():
        files = _list_folder(folder, split)
        names = [str(path) for path, _ in files]
        labels = [label for _, label in files]

        def build() -> dict[str, torch.Tensor]:
            blobs = [_read_file(path) for path, _ in files]
            return _decode(blobs, names, labels, split, str(folder))

        tensors = cached_tensors("cifar10-folder", [path for path, _ in files], build, {"split": split})
    elif archive.is_file():
        tensors = cached_tensors("cifar10-tar", [archive], lambda: _load_archive(archive, split), {"split": split})
    elif batches.is_dir():
        paths = [batches / name for name in PICKLE_FILES[split]]
        for path in paths:
            if not path.is_file():
                raise VislabError(f"{path}: missing from the CIFAR-10 python batches; restore it")
        tensors = cached_tensors("cifar10-pickle", paths, lambda: _load_pickles(paths), {"split": split})
    else:
        raise VislabError(
            f"CIFAR-10 {split} split not found: looked for {folder}/, {archive} and {batches}/; "
            f"--data-root should point at a folder holding cifar10-jpeg/ or cifar-10-batches-py/ "
            f"(CIFAR-10 python version: https://www.cs.toronto.edu/~kriz/cifar.html)"
        )
    return ImageSet(tensors["images"], tensors["labels"], CIFAR10_CLASSES)


def class_counts(imageset: ImageSet) -> list[int]:
    """Images per class, in class order."""
    return torch.bincount(imageset.labels, minlength=len(imageset.classes)).tolist()


# --- JPEG copy ---------------------------------------------------------------------------------


def _class_label(class_name: str, where: str) -> int:
    if class_name not in CIFAR10_CLASSES:
        raise VislabError(
            f"{where}: unknown class folder {class_name!r}{did_you_mean(class_name, CIFAR10_CLASSES)} "
            f"(expected the ten CIFAR-10 class names); rename or remove it"
        )
    return CIFAR10_CLASSES.index(class_name)


def _list_folder(folder: Path, split: str) -> list[tuple[Path, int]]:
    """(path, label) of every JPEG under folder/<class>/, by class then file name."""
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        label = _class_label(entry.name, f"{folder}/{entry.name}")
        names = sorted(n for n in os.listdir(entry.path) if n.lower().endswith((".jpg", ".jpeg")))
        files.extend((Path(entry.path) / name, label) for name in names)
    files.sort(key=lambda item: (item[1], item[0].name))
    _check_classes([label for _, label in files], split, str(folder))
    check_links_inside(folder, [str(path) for path, _ in files], levels=2)
    return files


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise VislabError(f"{path}: cannot read ({error.strerror or error}); remove or replace it") from None


def _load_archive(archive: Path, split: str) -> dict[str, torch.Tensor]:
    """Read <split>/<class>/*.jpg members straight from the tar.gz (nothing is extracted)."""
    entries: list[tuple[int, str, bytes]] = []  # (label, file name, bytes)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    # nothing is extracted, but such a name is a sign of a crafted archive
                    raise VislabError(f"{archive}: member {member.name} escapes the archive (an absolute "
                                      f"path or '..'); use the original CIFAR-10 JPEG archive")
                if not member.isfile() or not parts[-1].lower().endswith((".jpg", ".jpeg")):
                    continue
                if len(parts) < 3 or parts[-3] != split:
                    raise VislabError(
                        f"{archive}: member {member.name} is not under {split}/<class>/; "
                        f"use the CIFAR-10 JPEG archive for the {split} split"
                    )
                label = _class_label(parts[-2], f"{archive}: member {member.name}")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has contents
                entries.append((label, parts[-1], handle.read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise VislabError(f"{archive}: corrupt or unreadable archive ({error}); replace it") from None
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    labels = [label for label, _, _ in entries]
    _check_classes(labels, split, str(archive))
    names = [f"{archive}: member {split}/{CIFAR10_CLASSES[label]}/{name}" for label, name, _ in entries]
    return _decode([blob for _, _, blob in entries], names, labels, split, str(archive))


def _check_classes(labels: list[int], split: str, where: str) -> None:
    present = set(labels)
    missing = [name for index, name in enumerate(CIFAR10_CLASSES) if index not in present]
    if missing:
        raise VislabError(
            f"{where}: the {split} split has no images of class {', '.join(missing)}; "
            f"the copy is incomplete: unpack or download it again"
        )


def _decode(
    blobs: list[bytes], names: list[str], labels: list[int], split: str, where: str
) -> dict[str, torch.Tensor]:
    images = decode_jpegs(blobs, names)
    for image, name in zip(images, names):
        if tuple(image.shape) != IMAGE_SHAPE:
            raise VislabError(
                f"{name}: image is {image.shape[2]}x{image.shape[1]}, CIFAR-10 images are 32x32; "
                f"remove or replace this file"
            )
    return {
        "images": torch.stack(images) if images else torch.zeros((0, *IMAGE_SHAPE), dtype=torch.uint8),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


# --- python batches ----------------------------------------------------------------------------


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array may name (numpy 1 and 2 spell them differently)."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("builtins", "bytearray"): bytearray,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed list."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers; any other global is refused."""

    allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused to load global {module}.{name}") from None


def _unpickle_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """(data (N, 3072) uint8, labels) of one CIFAR-10 python batch file."""
    data = _read_file(path)
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as error:
        raise VislabError(
            f"{path}: not a CIFAR-10 batch ({error}; only numpy arrays are allowed); "
            f"replace it with the original file"
        ) from None
    except Exception as error:  # any damage to the pickle stream surfaces as some exception
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise VislabError(f"{path}: corrupt pickle ({type(error).__name__}: {reason[:160]}); replace it") from None
    if not isinstance(batch, dict):
        raise VislabError(f"{path}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; replace it")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = batch.get("data"), batch.get("labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise VislabError(f"{path}: 'data' is not a uint8 array of shape (N, 3072); replace it")
    try:
        label_list = [int(label) for label in labels]  # type: ignore[union-attr]
        whole = all(isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in labels)
    except (TypeError, ValueError, OverflowError):  # None, 'cat', NaN, inf
        whole = False
    if not whole:
        raise VislabError(f"{path}: 'labels' is not a list of integers; replace it") from None
    if len(label_list) != len(images):
        raise VislabError(f"{path}: {len(images)} images but {len(label_list)} labels; replace it")
    if any(not 0 <= label <= 9 for label in label_list):
        raise VislabError(f"{path}: labels outside 0..9; replace it with a CIFAR-10 (not CIFAR-100) batch")
    return images, label_list


def _load_pickles(paths: list[Path]) -> dict[str, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        data, batch_labels = _unpickle_batch(path)
        images.append(torch.from_numpy(data.copy()).reshape(-1, *IMAGE_SHAPE))  # rows are R, G, B planes
        labels.extend(batch_labels)
    return {"images": torch.cat(images), "labels": torch.tensor(labels, dtype=torch.int64)}
