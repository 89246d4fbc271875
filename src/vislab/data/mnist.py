"""MNIST from the original IDX files, gzipped or not.

IDX layout (big-endian): two zero bytes, a dtype code (0x08 = uint8), the number of dimensions,
then one uint32 per dimension, then the values. `parse_idx` checks every one of these against
the bytes actually present before allocating anything, so that a damaged or hostile file can
only ever produce a `VislabError`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import torch

from vislab.data import ImageSet
from vislab.data.cache import cached_tensors
from vislab.errors import VislabError, did_you_mean

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
GZIP_MAGIC = b"\x1f\x8b"
UINT8_CODE = 0x08
MAX_NDIM = 8  # IDX allows up to 255; nothing real uses more than 3

_REDOWNLOAD = "replace it with the original MNIST file"


def read_idx(path: Path) -> torch.Tensor:
    """A uint8 IDX file (gzip detected by its magic bytes, not the name) as a tensor."""
    try:
        data = Path(path).read_bytes()
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise VislabError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise VislabError(f"{path}: corrupt gzip data ({error}); {_REDOWNLOAD}") from None
    return parse_idx(data, str(path))


def parse_idx(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Decode IDX bytes; every problem is a `VislabError` naming `name`."""
    if len(data) < 4:
        raise VislabError(f"{name}: {len(data)} bytes is too short for an IDX header; {_REDOWNLOAD}")
    if data[0] != 0 or data[1] != 0:
        raise VislabError(
            f"{name}: not an IDX file (magic starts {data[:4].hex()}, expected 0000); {_REDOWNLOAD}"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code != UINT8_CODE:
        raise VislabError(
            f"{name}: IDX value type 0x{dtype_code:02x} is not supported (only 0x08, uint8); "
            f"{_REDOWNLOAD}"
        )
    if not 1 <= ndim <= MAX_NDIM:
        raise VislabError(f"{name}: IDX header says {ndim} dimensions (1..{MAX_NDIM}); {_REDOWNLOAD}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise VislabError(f"{name}: truncated IDX header ({len(data)} bytes); {_REDOWNLOAD}")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 1
    for size in shape:
        expected *= size  # Python ints: no overflow, and nothing allocated yet
    actual = len(data) - header_size
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise VislabError(
            f"{name}: {what}: header shape {tuple(shape)} needs {expected} value bytes, "
            f"file has {actual}; {_REDOWNLOAD}"
        )
    if expected == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    values = torch.frombuffer(bytearray(data[header_size:]), dtype=torch.uint8)
    return values.reshape(shape)


def find_idx_file(folder: Path, stem: str) -> Path:
    """`folder/stem` or `folder/stem.gz`, or an error saying which were looked for."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise VislabError(
        f"{folder / stem}[.gz]: not found; --data-root should point at a folder holding mnist/ "
        f"with the four IDX files (train-images-idx3-ubyte.gz, ...; MNIST: http://yann.lecun.com/exdb/mnist/)"
    )


def load_mnist(root: Path, split: str) -> ImageSet:
    """MNIST `split` ("train" or "test"): images (N, 1, 28, 28) uint8, labels 0..9."""
    if split not in SPLIT_PREFIX:
        raise VislabError(f"unknown MNIST split {split!r}: use train or test{did_you_mean(split, SPLIT_PREFIX)}")
    folder = Path(root) / "mnist"
    prefix = SPLIT_PREFIX[split]
    images_path = find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")

    def build() -> dict[str, torch.Tensor]:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
            raise VislabError(
                f"{images_path}: images have shape {tuple(images.shape)}, expected (N, 28, 28); "
                f"{_REDOWNLOAD}"
            )
        if labels.ndim != 1:
            raise VislabError(f"{labels_path}: labels have shape {tuple(labels.shape)}, expected (N,)")
        if len(images) != len(labels):
            raise VislabError(
                f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} "
                f"labels; use the matching pair of files"
            )
        if len(labels) and int(labels.max()) > 9:
            raise VislabError(f"{labels_path}: label {int(labels.max())} is not a digit 0..9; {_REDOWNLOAD}")
        return {"images": images.unsqueeze(1), "labels": labels.long()}  # (N, 1, 28, 28), (N,)

    tensors = cached_tensors("mnist", [images_path, labels_path], build, {"split": split})
    return ImageSet(tensors["images"], tensors["labels"], MNIST_CLASSES)
