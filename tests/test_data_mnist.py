"""MNIST IDX files: gzipped and plain, and every way a file can be damaged."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
import torch

from conftest import real_data
from vislab.data.mnist import load_mnist, parse_idx, read_idx
from vislab.errors import VislabError


def idx_bytes(values: torch.Tensor, *, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, values.ndim]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    return header + values.to(torch.uint8).numpy().tobytes()


def write_mnist(root: Path, split: str, count: int, *, gz: bool, labels: torch.Tensor | None = None) -> torch.Tensor:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = torch.randint(0, 256, (count, 28, 28), generator=torch.Generator().manual_seed(count), dtype=torch.uint8)
    labels = torch.arange(count) % 10 if labels is None else labels
    for stem, values in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(values)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return images


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path: Path, gz: bool) -> None:
    values = torch.randint(0, 256, (4, 5, 6), dtype=torch.uint8)
    path = tmp_path / "values.idx"
    path.write_bytes(gzip.compress(idx_bytes(values)) if gz else idx_bytes(values))
    assert torch.equal(read_idx(path), values)


def test_gzip_is_detected_by_magic_not_name(tmp_path: Path) -> None:
    values = torch.arange(10, dtype=torch.uint8)
    named_plain = tmp_path / "labels-idx1-ubyte"  # gzipped content, no .gz
    named_plain.write_bytes(gzip.compress(idx_bytes(values)))
    named_gz = tmp_path / "labels-idx1-ubyte.gz"  # plain content, .gz name
    named_gz.write_bytes(idx_bytes(values))
    assert torch.equal(read_idx(named_plain), values) and torch.equal(read_idx(named_gz), values)


def test_empty_dimension_is_allowed(tmp_path: Path) -> None:
    assert parse_idx(bytes([0, 0, 8, 2]) + (0).to_bytes(4, "big") + (28).to_bytes(4, "big")).shape == (0, 28)


GOOD = idx_bytes(torch.arange(24, dtype=torch.uint8).view(2, 3, 4))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (b"\x08\x03" + GOOD[2:], "not an IDX file"),
        (b"\x00\x00\x0d" + GOOD[3:], "value type 0x0d"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\xff", "255 dimensions"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
        # A header claiming 4 G x 4 G x 4 G values must fail on size, not try to allocate.
        (bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3 + b"\x00" * 64, "truncated"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
        (gzip.compress(GOOD)[:-6], "corrupt gzip"),
    ],
)
def test_damaged_idx_files_name_the_file(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "damaged-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(VislabError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_any_bytes_raise_only_vislab_error() -> None:
    rng = random.Random(0)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(300)]
    for _ in range(300):  # mutations of a valid file reach the deeper checks
        data = bytearray(GOOD)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        samples.append(bytes(data[: rng.randrange(len(data) + 1)]))
    for data in samples:
        try:
            parse_idx(data, "fuzz")
        except VislabError:
            pass


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path: Path, gz: bool) -> None:
    images = write_mnist(tmp_path, "test", 12, gz=gz)
    split = load_mnist(tmp_path, "test")
    assert split.images.shape == (12, 1, 28, 28) and split.images.dtype == torch.uint8
    assert torch.equal(split.images[:, 0], images)
    assert split.labels.dtype == torch.int64 and split.labels.tolist() == [i % 10 for i in range(12)]
    assert split.classes == tuple("0123456789")


def test_count_mismatch_is_an_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, "train", 5, gz=False, labels=torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(VislabError, match="5 images but .* 4 labels"):
        load_mnist(tmp_path, "train")


def test_label_above_nine_is_an_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, "train", 3, gz=True, labels=torch.tensor([1, 12, 3], dtype=torch.uint8))
    with pytest.raises(VislabError, match="label 12"):
        load_mnist(tmp_path, "train")


def test_missing_files_and_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(VislabError, match="t10k-images-idx3-ubyte.*--data-root"):
        load_mnist(tmp_path, "test")
    with pytest.raises(VislabError, match="did you mean: test"):
        load_mnist(tmp_path, "tset")


@pytest.mark.real_data
def test_real_mnist_matches_its_source_notes() -> None:
    root = real_data("mnist").parent
    train, test = load_mnist(root, "train"), load_mnist(root, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3
