"""Small generated data sets for `vislab demo` and the tests; never for reported figures.

Each is deterministic, made in seconds, and learnable by a small model in a few epochs:

- `digits`: scikit-learn's 8x8 digits, scaled up to MNIST's 28x28 (it ships with
  scikit-learn, so nothing is downloaded);
- `tiny_cifar`: 32x32 colour patterns, one per CIFAR-10 class name;
- `synthetic_lfw`: a data root laid out like LFW, with cartoon "faces" per identity and
  View-1 pairs files, so the faces study runs end to end without the real images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from vislab.data import ImageSet, one_thread
from vislab.data.cache import cache_root
from vislab.data.cifar import CIFAR10_CLASSES
from vislab.errors import VislabError, did_you_mean

SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise VislabError(f"unknown split {split!r}: use train or test{did_you_mean(split, SPLITS)}")


# --- digits ------------------------------------------------------------------------------------


def digits(split: str) -> ImageSet:
    """scikit-learn's 1,797 8x8 digits as (N, 1, 28, 28) uint8; a stratified 80/20 split."""
    _check_split(split)
    images, labels = _digits_splits()[split]
    return ImageSet(images, labels, tuple(str(d) for d in range(10)))


@functools.cache
def _digits_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    pixels = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) * (255 / 16)  # (N, 1, 8, 8)
    pixels = F.interpolate(pixels, size=(28, 28), mode="bilinear", align_corners=False)
    images = pixels.round().clamp(0, 255).to(torch.uint8)  # (N, 1, 28, 28)
    labels = torch.as_tensor(data.target, dtype=torch.int64)
    train, test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0
    )
    train, test = torch.as_tensor(sorted(train)), torch.as_tensor(sorted(test))
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


# --- tiny CIFAR --------------------------------------------------------------------------------

# One foreground colour per class (RGB); shape and colour are both cues.
_PALETTE = torch.tensor(
    [
        [230, 60, 50], [60, 200, 70], [70, 90, 230], [230, 210, 60], [200, 70, 210],
        [60, 210, 220], [250, 150, 40], [140, 90, 40], [240, 240, 240], [120, 230, 150],
    ],
    dtype=torch.float32,
)  # fmt: skip


def _class_masks(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """(10, N, H, W) float masks, one shape per class, on shifted pixel coordinates (N, H, W)."""
    radius = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    masks = [
        (yy // 4) % 2 == 0,  # horizontal stripes
        (xx // 4) % 2 == 0,  # vertical stripes
        ((xx + yy) // 5) % 2 == 0,  # diagonal stripes
        (xx // 6 + yy // 6) % 2 == 0,  # checkerboard
        radius < 9,  # disc
        (radius > 6) & (radius < 11),  # ring
        ((xx - 16).abs() < 3) | ((yy - 16).abs() < 3),  # cross
        ((xx - 16).abs() < 8) & ((yy - 16).abs() < 8),  # square
        (yy - 8 > (xx - 16).abs()) & (yy < 26),  # triangle
        ((xx % 8 - 4) ** 2 + (yy % 8 - 4) ** 2) < 5,  # dots
    ]
    return torch.stack(masks).float()


def tiny_cifar(split: str, n_per_class: int = 60, seed: int = 0) -> ImageSet:
    """(10 * n_per_class, 3, 32, 32) uint8 patterns named like CIFAR-10's classes."""
    _check_split(split)
    generator = torch.Generator().manual_seed(seed * 2 + SPLITS.index(split))  # test: its own stream
    count = 10 * n_per_class
    labels = torch.arange(count) % 10
    shifts = torch.randint(-4, 5, (2, count, 1, 1), generator=generator)
    grid = torch.arange(32)
    yy = (grid.view(1, 32, 1) - shifts[0]).expand(count, 32, 32)
    xx = (grid.view(1, 1, 32) - shifts[1]).expand(count, 32, 32)
    mask = _class_masks(yy, xx)[labels, torch.arange(count)].unsqueeze(1)  # (N, 1, 32, 32)
    foreground = _PALETTE[labels] + 30 * torch.randn(count, 3, generator=generator)  # (N, 3)
    background = 40 + 60 * torch.rand(count, 3, generator=generator)  # dim, random per image
    images = background.view(-1, 3, 1, 1) * (1 - mask) + foreground.view(-1, 3, 1, 1) * mask
    images = images + 25 * torch.randn(images.shape, generator=generator)
    return ImageSet(images.round().clamp(0, 255).to(torch.uint8), labels, CIFAR10_CLASSES)


# --- synthetic LFW -----------------------------------------------------------------------------

LFW_SIZE = 250
_MARKER = "SYNTHETIC_LFW.json"  # written last: its presence means the root is complete


def synthetic_lfw(
    dest: Path | None = None,
    *,
    n_train_people: int = 30,
    n_test_people: int = 16,
    images_per_person: int = 5,
    seed: int = 0,
) -> Path:
    """Write (once) a data root laid out like LFW and return it; `find_image_dir` works on it.

    `<dest>/lfw/lfw-deepfunneled/Name/Name_0001.jpg` (250x250 RGB) for every identity, and
    View-1 `pairsDevTrain.txt` / `pairsDevTest.txt` over disjoint people.
    """
    if images_per_person < 2 or n_train_people < 2 or n_test_people < 2:
        raise VislabError("synthetic LFW needs at least 2 people per split and 2 images per person")
    params = {
        "n_train_people": n_train_people,
        "n_test_people": n_test_people,
        "images_per_person": images_per_person,
        "seed": seed,
        "version": 2,  # 2: no pair listed twice in reverse order
    }
    marker_text = json.dumps(params, sort_keys=True)
    default = dest is None
    if dest is None:
        suffix = "" if (n_train_people, n_test_people, images_per_person, seed) == (30, 16, 5, 0) else (
            "-" + hashlib.sha256(marker_text.encode()).hexdigest()[:8]
        )
        dest = cache_root() / f"builtin-lfw-v1{suffix}"
    dest = Path(dest)
    if _is_complete(dest, marker_text):
        return dest
    if dest.exists():
        if not default:
            raise VislabError(
                f"{dest}: exists but is not a synthetic LFW root made with these settings; "
                f"remove it or choose another folder"
            )
        shutil.rmtree(dest)  # ours, from another version or an interrupted run

    dest.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        _write_synthetic_lfw(building, params)
        (building / _MARKER).write_text(marker_text)
        try:
            os.rename(building, dest)
        except OSError:  # another process finished first
            if not _is_complete(dest, marker_text):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return dest


def _is_complete(dest: Path, marker_text: str) -> bool:
    try:
        return (dest / _MARKER).read_text() == marker_text
    except OSError:
        return False


def _write_synthetic_lfw(root: Path, params: dict[str, int]) -> None:
    rng = random.Random(params["seed"])
    generator = torch.Generator().manual_seed(params["seed"])
    image_dir = root / "lfw" / "lfw-deepfunneled"
    people = {
        "Train": [f"Person_{chr(65 + i % 26)}_Train{i:02d}" for i in range(params["n_train_people"])],
        "Test": [f"Person_{chr(65 + i % 26)}_Test{i:02d}" for i in range(params["n_test_people"])],
    }
    count = params["images_per_person"]
    with one_thread():  # 250x250 ops are too small to share: threads only add overhead (5x)
        _write_people(image_dir, people, count, rng, generator)
    for split, file_name in (("Train", "pairsDevTrain.txt"), ("Test", "pairsDevTest.txt")):
        (root / "lfw" / file_name).write_text(_view1_pairs(people[split], count, rng))


def _write_people(
    image_dir: Path, people: dict[str, list[str]], count: int, rng: random.Random, generator: torch.Generator
) -> None:
    from torchvision.io import encode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates encode_jpeg
        for name in people["Train"] + people["Test"]:
            identity = _random_identity(rng)
            (image_dir / name).mkdir(parents=True)
            for index in range(1, count + 1):
                face = _render_face(identity, generator)
                (image_dir / name / f"{name}_{index:04d}.jpg").write_bytes(
                    encode_jpeg(face, quality=90).numpy().tobytes()
                )


def _view1_pairs(names: list[str], count: int, rng: random.Random) -> str:
    """A View-1 pairs file: n same-person rows, then n different-person rows."""
    same = [(name, i, j) for name in names for i in range(1, count + 1) for j in range(i + 1, count + 1)]
    rng.shuffle(same)
    n = min(len(same), 4 * len(names))
    different: set[tuple[str, int, str, int]] = set()
    drawn: set[tuple[tuple[str, int], ...]] = set()  # each pair once, in either order (as in LFW)
    while len(different) < n:
        first, second = rng.sample(names, 2)
        row = (first, rng.randint(1, count), second, rng.randint(1, count))
        key = tuple(sorted([row[:2], row[2:]]))
        if key not in drawn:
            drawn.add(key)
            different.add(row)
    rows = [f"{a}\t{i}\t{j}" for a, i, j in sorted(same[:n])]
    rows += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in sorted(different)]
    return f"{n}\n" + "\n".join(rows) + "\n"


def _random_identity(rng: random.Random) -> dict[str, object]:
    """What makes one synthetic person: colours, face shape, features and a mark."""

    def colour(low: int, high: int) -> list[float]:
        return [rng.uniform(low, high) for _ in range(3)]

    return {
        "background": colour(20, 235),
        "skin": colour(90, 250),
        "hair": colour(0, 200),
        "eyes": colour(0, 160),
        "mark": colour(0, 255),
        "face_axes": (rng.uniform(55, 75), rng.uniform(70, 95)),  # (half width, half height)
        "hair_height": rng.uniform(0.1, 0.6),  # fraction of the face the hair covers
        "eye_spacing": rng.uniform(18, 34),
        "eye_height": rng.uniform(-30, -8),
        "eye_radius": rng.uniform(5, 11),
        "mouth": (rng.uniform(12, 35), rng.uniform(25, 50)),  # (half width, offset below centre)
        "mark_at": (rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(6, 14)),  # (x, y, radius)
    }


def _render_face(identity: dict, generator: torch.Generator) -> torch.Tensor:
    """One jittered (3, 250, 250) uint8 image of `identity`."""
    jitter = torch.rand(5, generator=generator)
    centre_x = LFW_SIZE / 2 + (jitter[0].item() - 0.5) * 20
    centre_y = LFW_SIZE / 2 + (jitter[1].item() - 0.5) * 20
    scale = 0.93 + 0.14 * jitter[2].item()
    angle = (jitter[3].item() - 0.5) * 0.2  # radians of head tilt
    grid = torch.arange(LFW_SIZE, dtype=torch.float32)
    dy, dx = grid.view(-1, 1) - centre_y, grid.view(1, -1) - centre_x
    # Face coordinates: rotated and scaled so every feature moves with the head.
    x = (dx * math.cos(angle) + dy * math.sin(angle)) / scale  # (250, 250)
    y = (-dx * math.sin(angle) + dy * math.cos(angle)) / scale

    half_width, half_height = identity["face_axes"]
    face = (x / half_width) ** 2 + (y / half_height) ** 2 < 1
    hair = face & (y < -half_height * (1 - 2 * identity["hair_height"]))
    eye_x, eye_y, eye_r = identity["eye_spacing"], identity["eye_height"], identity["eye_radius"]
    eyes = ((x - eye_x) ** 2 + (y - eye_y) ** 2 < eye_r**2) | ((x + eye_x) ** 2 + (y - eye_y) ** 2 < eye_r**2)
    mouth_half, mouth_y = identity["mouth"]
    mouth = (x.abs() < mouth_half) & ((y - mouth_y).abs() < 4)
    mark_x, mark_y, mark_r = identity["mark_at"]
    mark = face & ((x - mark_x) ** 2 + (y - mark_y) ** 2 < mark_r**2)

    image = torch.tensor(identity["background"]).view(3, 1, 1).expand(3, LFW_SIZE, LFW_SIZE).clone()
    for region, colour in ((face, "skin"), (hair, "hair"), (mark, "mark"), (eyes, "eyes")):
        image[:, region] = torch.tensor(identity[colour]).view(3, 1)
    image[:, mouth & face] = image[:, mouth & face] * 0.4
    brightness = (jitter[4].item() - 0.5) * 40
    image = image + brightness + 10 * torch.randn(image.shape, generator=generator)
    return image.round().clamp(0, 255).to(torch.uint8)
