"""The APML Ex1 car / truck / cat task: the imbalanced split built from CIFAR-10, and the
course's own pickles (read with a restricted unpickler).

The course's pickles are not available, so the split is rebuilt from CIFAR-10 (automobile ->
car 0, truck -> 1, cat -> 2, the course's label order):

    dev    625 images  (551 car / 51 truck / 23 cat; the course's dev set)
    train  5,047 images (4,449 / 412 / 186: the same shares from the remaining training
           images; CIFAR-10 has 5,000 cars, so the course's 5,625 cannot be matched)
    test   3,000 images, the CIFAR-10 test images of the three classes (1,000 each: balanced,
           like the course's hidden test)

Selection is a seeded permutation per class (torch.Generator, `split_seed`), dev first, then
train from the rest: deterministic, disjoint, and recorded in a manifest of file names.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from vislab.data import ImageSet
from vislab.errors import VislabError

CLASSES = ("car", "truck", "cat")
CIFAR_NAMES = ("automobile", "truck", "cat")  # CIFAR-10 class of each course class
DEV_COUNTS = (551, 51, 23)
TRAIN_COUNTS = (4449, 412, 186)
TEST_PER_CLASS = 1000


def select_classes(images: ImageSet) -> tuple[ImageSet, torch.Tensor]:
    """The car/truck/cat images of a CIFAR-10-named set, relabelled 0/1/2; also the indices
    into `images` they came from."""
    try:
        source = [images.classes.index(name) for name in CIFAR_NAMES]
    except ValueError:
        raise VislabError(f"the image set has classes {images.classes}; it needs "
                          f"{', '.join(CIFAR_NAMES)}") from None
    keep = torch.cat([torch.nonzero(images.labels == label).flatten() for label in source])
    relabel = torch.full((len(images.classes),), -1, dtype=torch.long)
    relabel[source] = torch.arange(len(source))
    return ImageSet(images.images[keep], relabel[images.labels[keep]], CLASSES), keep


def imbalanced_split(
    train_pool: ImageSet,
    test_pool: ImageSet,
    *,
    dev_counts: Sequence[int] = DEV_COUNTS,
    train_counts: Sequence[int] = TRAIN_COUNTS,
    test_per_class: int = TEST_PER_CLASS,
    seed: int = 0,
) -> tuple[dict[str, ImageSet], dict[str, list[int]]]:
    """({'train', 'dev', 'test'}: ImageSet labelled 0/1/2, manifest {split: source indices}).

    `train_pool` and `test_pool` are CIFAR-10-named sets; dev and train come from
    `train_pool` (disjoint), test from `test_pool`. Manifest indices point into the pools.
    """
    train3, train_source = select_classes(train_pool)
    test3, test_source = select_classes(test_pool)
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[str, list[torch.Tensor]] = {"train": [], "dev": [], "test": []}
    for label, name in enumerate(CLASSES):
        pool = torch.nonzero(train3.labels == label).flatten()
        need = dev_counts[label] + train_counts[label]
        if need > len(pool):
            raise VislabError(f"class {name}: the split needs {need} training images, the data has {len(pool)}")
        order = pool[torch.randperm(len(pool), generator=generator)]
        chosen["dev"].append(order[: dev_counts[label]].sort().values)
        chosen["train"].append(order[dev_counts[label]:need].sort().values)
        tests = torch.nonzero(test3.labels == label).flatten()
        if test_per_class > len(tests):
            raise VislabError(f"class {name}: the test split needs {test_per_class} images, the data has {len(tests)}")
        chosen["test"].append(tests[torch.randperm(len(tests), generator=generator)[:test_per_class]].sort().values)
    sets, manifest = {}, {}
    for split, parts in chosen.items():
        index = torch.cat(parts)
        pool, source = (test3, test_source) if split == "test" else (train3, train_source)
        sets[split] = pool.subset(index)
        manifest[split] = source[index].tolist()
    return sets, manifest


def manifest_names(manifest: dict[str, list[int]], train_pool: ImageSet, test_pool: ImageSet) -> dict[str, list[str]]:
    """Manifest indices as JPEG-copy file names ('train/automobile/0123.jpg'): the loaders
    order images by class, then file name, and the copy numbers files 0000.. per class."""
    names = {}
    for split, indices in manifest.items():
        pool, folder = (test_pool, "test") if split == "test" else (train_pool, "train")
        starts = torch.cumsum(torch.bincount(pool.labels, minlength=len(pool.classes)), 0) - \
            torch.bincount(pool.labels, minlength=len(pool.classes))
        names[split] = [f"{folder}/{pool.classes[int(pool.labels[i])]}/{i - int(starts[pool.labels[i]]):04d}.jpg"
                        for i in indices]
    return names


# --- the course's pickles ----------------------------------------------------------------------


def _tensor_from_bytes(data: bytes) -> object:
    """Stand-in for torch.storage._load_from_bytes (which calls torch.load with
    weights_only=False): the same bytes, loaded with weights_only=True."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Builds tensors and plain containers; any other global is refused, never imported."""

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _tensor_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): __import__("codecs").encode,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "dict"): dict,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused to load global {module}.{name}") from None


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed list."""


def load_course_pickle(path: str | Path) -> ImageSet:
    """A course pickle (a list of (3x32x32 float tensor in [-1, 1], label 0..2)) as uint8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise VislabError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        items = _TensorsOnlyUnpickler(io.BytesIO(data)).load()
    except _Refused as error:
        raise VislabError(f"{path}: {error}; only tensors and plain containers are allowed, "
                          "so the file was refused unread") from None
    except Exception as error:  # noqa: BLE001 - any damage to the stream means the same
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in reason or "Unsupported global" in reason:
            reason = "a tensor inside holds objects other than plain data, so it was refused"
        raise VislabError(f"{path}: not a readable course pickle ({reason[:160]})") from None
    if not isinstance(items, (list, tuple)) or not items:
        raise VislabError(f"{path}: holds a {type(items).__name__}, not a non-empty list of (image, label)")
    images, labels = [], []
    for number, item in enumerate(items):
        ok = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], torch.Tensor)
        if not ok or tuple(item[0].shape) != (3, 32, 32):
            raise VislabError(f"{path}: item {number} is not a (3x32x32 tensor, label) pair")
        image, label = item
        if not image.is_floating_point():
            raise VislabError(f"{path}: item {number} is not a real-valued image (dtype {image.dtype}); "
                              "the course pickles hold float tensors in [-1, 1]")
        if not bool(torch.isfinite(image).all()):
            raise VislabError(f"{path}: item {number} has NaN or infinite values; replace the file")
        low, high = float(image.min()), float(image.max())
        if low < -1.001 or high > 1.001:
            raise VislabError(f"{path}: item {number} has values outside [-1, 1] ({low:g} to {high:g}); "
                              "the course pickles hold images normalised to [-1, 1]")
        if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(CLASSES):
            raise VislabError(f"{path}: item {number} has label {label!r}; labels are 0 (car), 1 (truck), 2 (cat)")
        images.append(image.float())
        labels.append(label)
    stacked = torch.stack(images)  # (N, 3, 32, 32) in [-1, 1]
    uint8 = ((stacked / 2 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(uint8, torch.tensor(labels, dtype=torch.long), CLASSES)
