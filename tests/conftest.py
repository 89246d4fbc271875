"""Shared fixtures: the real data root (skip when absent), a private cache per session, and
helpers that write data files the way the loaders expect them."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VISLAB_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True, scope="session")
def _small_and_private(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests never touch the user's cache, and stay on one thread so that the suite's timing
    # does not depend on what else the machine runs.
    os.environ.setdefault("VISLAB_CACHE", str(tmp_path_factory.mktemp("vislab-cache")))
    torch.set_num_threads(1)


def real_data(subdir: str) -> Path:
    """The real data folder `subdir` under ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / subdir
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set VISLAB_DATA to the shared data root)")
    return path


def write_archive(root: Path, split: str, files: dict[str, bytes]) -> Path:
    """<root>/cifar10-jpeg/cifar10-jpeg-<split>.tar.gz holding `files` (member name -> bytes)."""
    archive = root / "cifar10-jpeg" / f"cifar10-jpeg-{split}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for relative, data in files.items():
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive
