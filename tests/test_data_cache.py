"""The decode-once cache: identical tensors on a hit, silent rebuild of a corrupt file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vislab.data import cache
from vislab.data.cache import cache_root, cached_tensors, clear_memo
from vislab.errors import VislabError


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VISLAB_CACHE", str(root))
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(b"some source bytes")
    return path


class CountingBuild:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"images": torch.arange(24, dtype=torch.uint8).view(2, 3, 2, 2), "labels": torch.tensor([0, 1])}


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("VISLAB_CACHE")
    assert cache_root() == Path.home() / ".cache" / "vislab"


def test_second_call_returns_identical_tensors_from_memo_and_disk(private_cache: Path, source: Path) -> None:
    build = CountingBuild()
    first = cached_tensors("unit", [source], build, {"size": 2})
    again = cached_tensors("unit", [source], build, {"size": 2})
    assert build.calls == 1 and torch.equal(first["images"], again["images"])
    assert len(list(private_cache.glob("unit-*.pt"))) == 1
    clear_memo()
    from_disk = cached_tensors("unit", [source], build, {"size": 2})
    assert build.calls == 1  # read back, not rebuilt
    assert torch.equal(from_disk["images"], first["images"]) and torch.equal(from_disk["labels"], first["labels"])


def test_params_and_source_changes_make_new_entries(private_cache: Path, source: Path) -> None:
    build = CountingBuild()
    cached_tensors("unit", [source], build, {"size": 2})
    cached_tensors("unit", [source], build, {"size": 3})
    assert build.calls == 2
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: decode again
    cached_tensors("unit", [source], build, {"size": 2})
    assert build.calls == 3


@pytest.mark.parametrize("garbage", [b"", b"not a zip at all", None])
def test_corrupt_cache_file_is_rebuilt_silently(private_cache: Path, source: Path, garbage: bytes | None) -> None:
    build = CountingBuild()
    expected = cached_tensors("unit", [source], build)
    (cache_file,) = private_cache.glob("unit-*.pt")
    if garbage is None:  # a valid torch file holding the wrong thing
        torch.save([1, 2, 3], cache_file)
    else:
        cache_file.write_bytes(garbage)
    clear_memo()
    rebuilt = cached_tensors("unit", [source], build)
    assert build.calls == 2 and torch.equal(rebuilt["images"], expected["images"])
    clear_memo()
    cached_tensors("unit", [source], build)  # the rewritten file is good again
    assert build.calls == 2


def test_truncated_cache_file_is_rebuilt(private_cache: Path, source: Path) -> None:
    build = CountingBuild()
    cached_tensors("unit", [source], build)
    (cache_file,) = private_cache.glob("unit-*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:-40])
    clear_memo()
    cached_tensors("unit", [source], build)
    assert build.calls == 2


def test_off_disables_the_disk_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: Path) -> None:
    monkeypatch.setenv("VISLAB_CACHE", "off")
    monkeypatch.setattr(cache, "cache_root", lambda: tmp_path / "never")
    build = CountingBuild()
    cached_tensors("unit", [source], build)
    cached_tensors("unit", [source], build)
    assert build.calls == 1 and not (tmp_path / "never").exists()


def test_missing_source_is_a_vislab_error(private_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(VislabError, match="missing.bin"):
        cached_tensors("unit", [tmp_path / "missing.bin"], CountingBuild())


def test_returned_dict_can_be_changed_without_touching_the_memo(private_cache: Path, source: Path) -> None:
    first = cached_tensors("unit", [source], CountingBuild())
    first["extra"] = torch.zeros(1)
    assert "extra" not in cached_tensors("unit", [source], CountingBuild())
