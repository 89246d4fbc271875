"""LFW faces: `Name/Name_NNNN.jpg` person folders and the pairs files that index them.

Pairs format (LFW README): the first line is `n` (View 1: n same-person rows, then n
different-person rows) or `folds n` (View 2: folds x (n same + n different)). A same row is
`Name i j`, a different row `Name1 i Name2 j`; indices count from 1 and name the file
`Name/Name_%04d.jpg`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vislab.data import check_links_inside, decode_jpegs, one_thread
from vislab.data.cache import cached_tensors
from vislab.errors import VislabError, did_you_mean

IMAGE_DIR_CANDIDATES = ("lfw/lfw-deepfunneled", "lfw/lfw", "lfw-deepfunneled")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take '+1', '1_0' and '٣'
_DECODE_CHUNK = 256  # images decoded and resized together (bounds peak memory)


@dataclass(frozen=True)
class Pair:
    """One row of a pairs file: image `index1` of `name1` vs image `index2` of `name2`."""

    name1: str
    index1: int
    name2: str
    index2: int
    line: int  # 1-based line in the pairs file, for error messages

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def image_path(image_dir: Path, name: str, index: int) -> Path:
    return Path(image_dir) / name / f"{name}_{index:04d}.jpg"


# --- pairs files -------------------------------------------------------------------------------


def parse_pairs(path: Path) -> list[Pair]:
    """All pairs of an LFW pairs file, in file order; any problem is a one-line `VislabError`."""
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        reason = getattr(error, "strerror", None) or error
        raise VislabError(f"{path}: cannot read ({reason}); check --pairs-file") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte order mark (Windows editors) is not data
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise VislabError(f"{path}:{line}: not UTF-8 text; use an LFW pairs file") from None

    rows = [(number, line.split()) for number, line in enumerate(text.split("\n"), start=1)]
    rows = [(number, fields) for number, fields in rows if fields]  # blank lines are ignored
    if not rows:
        raise VislabError(f"{path}: empty file; a pairs file starts with a header line `n` or `folds n`")
    header_line, header = rows[0]
    if len(header) not in (1, 2) or not all(_DIGITS.fullmatch(field) for field in header):
        raise VislabError(
            f"{path}:{header_line}: header {' '.join(header)!r} is not `n` or `folds n` "
            f"(positive integers); put the pair counts on the first line"
        )
    counts = [int(field) for field in header]
    if min(counts) < 1:
        raise VislabError(f"{path}:{header_line}: header counts must be at least 1; fix the header")
    folds, per_kind = (1, counts[0]) if len(counts) == 1 else (counts[0], counts[1])
    expected = folds * 2 * per_kind

    pairs = [_parse_row(path, number, fields) for number, fields in rows[1:]]
    if len(pairs) != expected:
        layout = f"{per_kind} same + {per_kind} different" if folds == 1 else f"{folds} folds x 2 x {per_kind}"
        raise VislabError(
            f"{path}:{header_line}: header promises {expected} pairs ({layout}) but the file has "
            f"{len(pairs)} rows; fix the header or restore the missing rows"
        )
    _refuse_duplicates(path, pairs, fold_size=2 * per_kind)
    return pairs


def _refuse_duplicates(path: Path, pairs: Sequence[Pair], fold_size: int) -> None:
    """A pair listed twice in one fold (in either order) would count twice in the accuracy, and
    an image paired with itself is trivially 'same'; LFW's own files have neither."""
    for start in range(0, len(pairs), fold_size):
        seen: dict[tuple[tuple[str, int], tuple[str, int]], int] = {}
        for pair in pairs[start : start + fold_size]:
            first, second = (pair.name1, pair.index1), (pair.name2, pair.index2)
            if first == second:
                raise VislabError(f"{path}:{pair.line}: pairs image {pair.index1} of {pair.name1} with itself; "
                                  "remove the row")
            key = (min(first, second), max(first, second))
            if key in seen:
                raise VislabError(f"{path}:{pair.line}: duplicate of the pair on line {seen[key]}; remove one of them")
            seen[key] = pair.line


def _parse_row(path: Path, number: int, fields: list[str]) -> Pair:
    where = f"{path}:{number}"
    if len(fields) == 3:
        name1, index1, index2 = fields
        name2 = name1
    elif len(fields) == 4:
        name1, index1, name2, index2 = fields
    else:
        raise VislabError(
            f"{where}: {len(fields)} fields; a row is `Name i j` (same person) or "
            f"`Name1 i Name2 j` (different people)"
        )
    for name in (name1, name2):
        _check_name(where, name)
    return Pair(name1, _parse_index(where, index1), name2, _parse_index(where, index2), number)


def _check_name(where: str, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name:
        raise VislabError(f"{where}: name {name!r} is not a plain folder name; remove path characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise VislabError(f"{where}: name {name!r} contains control characters; fix the row")


def _parse_index(where: str, field: str) -> int:
    if not _DIGITS.fullmatch(field) or int(field) < 1:
        raise VislabError(f"{where}: image index {field!r} is not a whole number >= 1; fix the row")
    return int(field)


# --- image folders -----------------------------------------------------------------------------


def find_image_dir(root: Path) -> Path:
    """The folder holding the person folders under data root `root`."""
    tried = [Path(root) / candidate for candidate in IMAGE_DIR_CANDIDATES]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise VislabError(
        f"LFW images not found: looked for {', '.join(str(p) + '/' for p in tried)}; "
        f"--data-root should point at a folder holding lfw/lfw-deepfunneled/ and the pairs files "
        f"(LFW: http://vis-www.cs.umass.edu/lfw/, deep-funneled images and View 1 pairs)"
    )


def default_pairs_files(root: Path) -> tuple[Path, Path]:
    """The View-1 (train, test) pairs files under data root `root`."""
    return Path(root) / "lfw" / "pairsDevTrain.txt", Path(root) / "lfw" / "pairsDevTest.txt"


def list_people(image_dir: Path) -> dict[str, int]:
    """Person name -> number of `Name_NNNN.jpg` files in the person's folder."""
    people = {}
    try:
        entries = list(os.scandir(image_dir))
    except OSError as error:
        raise VislabError(f"{image_dir}: cannot list ({error.strerror or error}); check --data-root") from None
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        prefix, length = entry.name + "_", len(entry.name) + 9  # Name_NNNN.jpg
        people[entry.name] = sum(
            1
            for name in os.listdir(entry.path)
            if len(name) == length and name.startswith(prefix) and name.endswith(".jpg") and name[-8:-4].isdigit()
        )
    return people


def check_pairs(image_dir: Path, pairs: Sequence[Pair], pairs_file: Path) -> None:
    """Every pair names an existing person folder and an image index that person has."""
    people = list_people(image_dir)
    for pair in pairs:
        for name, index in ((pair.name1, pair.index1), (pair.name2, pair.index2)):
            if name not in people:
                raise VislabError(
                    f"{pairs_file}:{pair.line}: no folder {name!r} in {image_dir}"
                    f"{did_you_mean(name, people)}; use the pairs file that belongs to these images"
                )
            if index > people[name]:
                raise VislabError(
                    f"{pairs_file}:{pair.line}: {name} has {people[name]} images in {image_dir}, "
                    f"no image {index}; use the pairs file that belongs to these images"
                )


def load_faces(
    image_dir: Path,
    keys: Sequence[tuple[str, int]],
    *,
    size: int,
    grayscale: bool,
    crop: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Faces for `keys` ((name, index) each), uint8 (N, C, size, size), C = 1 if grayscale else 3.

    Each image is optionally center-cropped to `crop` x `crop` first (LFW images are 250x250
    with the face in the middle), then resized with antialiasing. `progress(done, total)` is
    called after each decoded chunk (not at all on a cache hit).
    """
    if size < 1 or (crop is not None and crop < 1):
        raise VislabError(f"face size {size} / crop {crop} must be positive; fix the config")
    # Plain strings: building 13,233 pathlib objects and stat-ing them twice costs seconds.
    folder = os.fspath(image_dir)
    files = [f"{folder}/{name}/{name}_{index:04d}.jpg" for name, index in keys]
    for file in files:
        if not os.path.isfile(file):
            raise VislabError(f"{file}: face image not found; check the pairs file and --data-root")
    check_links_inside(folder, files, levels=2)
    channels = 1 if grayscale else 3

    def build() -> dict[str, torch.Tensor]:
        faces = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
        for start in range(0, len(files), _DECODE_CHUNK):
            chunk = [Path(file) for file in files[start : start + _DECODE_CHUNK]]
            blobs = []
            for path in chunk:
                try:
                    blobs.append(path.read_bytes())
                except OSError as error:
                    raise VislabError(f"{path}: cannot read ({error.strerror or error}); replace it") from None
            images = decode_jpegs(blobs, [str(path) for path in chunk], grayscale=grayscale)
            with one_thread():  # see one_thread: 20x faster here on a busy 2-core machine
                faces[start : start + len(chunk)] = _crop_and_resize(images, chunk, size, crop)
            if progress is not None:
                progress(start + len(chunk), len(files))
        return {"faces": faces}

    params = {"size": size, "grayscale": grayscale, "crop": crop, "keys": [list(key) for key in keys]}
    return cached_tensors("lfw-faces", files, build, params)["faces"]


def _crop_and_resize(images: list[torch.Tensor], paths: list[Path], size: int, crop: int | None) -> torch.Tensor:
    """Center-crop then resize each (C, H, W) uint8 image; returns (B, C, size, size) uint8."""
    cropped = []
    for image, path in zip(images, paths):
        height, width = image.shape[1:]
        if crop is not None:
            if crop > min(height, width):
                raise VislabError(f"{path}: image is {width}x{height}, smaller than crop {crop}; lower the crop")
            top, left = (height - crop) // 2, (width - crop) // 2
            image = image[:, top : top + crop, left : left + crop]
        cropped.append(image)
    if all(image.shape == cropped[0].shape for image in cropped):  # always so for real LFW
        return _resize(torch.stack(cropped), size)
    return torch.cat([_resize(image.unsqueeze(0), size) for image in cropped])


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, C, size, size) uint8, bilinear with antialiasing."""
    if batch.shape[-2:] == (size, size):
        return batch
    # uint8 in, uint8 out: PyTorch's integer path is ~10x faster than going through float
    # (within 1 grey level of it), and fastest on channels-last input.
    batch = batch.contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.contiguous()
