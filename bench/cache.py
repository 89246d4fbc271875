"""Decode and cache (figure 4): a study's data start-up on the first run (decode the JPEGs,
write the tensor cache) against the next run (read the cache), for LFW and CIFAR-10.

    python -m bench cache            # the real data: a few minutes on 2 cores
    python -m bench cache --quick    # built-in tiny CIFAR and synthetic LFW written as JPEGs

Each repeat points VISLAB_CACHE at a new empty temporary folder (the user's cache is never
touched), clears the in-process memo, loads once (a miss: decode and write) and loads again
after clearing the memo (a hit: read the .pt files). LFW is the faces study's `load_data`
with its defaults (training faces, validation and test pairs, the one-shot pool); CIFAR-10 is
the train and test splits. Figure = first-run s / cache-hit s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench._common import REPEATS, data_root, ratio_row, timed

QUICK_FACES = ["image_size=32", "crop=160"]


def run(quick: bool) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    previous = os.environ.get("VISLAB_CACHE")
    try:
        root = None if quick else data_root()
        data = "the real data" if root else "built-in tiny CIFAR and synthetic LFW as JPEGs"
        root = root or _tiny_roots(work)
        rows = []
        for name, load in (("LFW (faces defaults)", _faces_loader(root, quick)),
                           ("CIFAR-10 train+test", _cifar_loader(root))):
            first, hit = _first_and_hit(load, work)
            rows.append(ratio_row(f"cache: {name} start-up, first run s / cache hit s", hit, first, target=None,
                                  note=f"ours = cache hit, baseline = first run; {data}"))
        return rows
    finally:
        from vislab.data.cache import clear_memo

        clear_memo()
        if previous is None:
            os.environ.pop("VISLAB_CACHE", None)
        else:
            os.environ["VISLAB_CACHE"] = previous
        shutil.rmtree(work, ignore_errors=True)


def _first_and_hit(load, work: Path) -> tuple[list[float], list[float]]:
    from vislab.data.cache import clear_memo

    first, hit = [], []
    for repeat in range(REPEATS):
        cache = work / f"cache-{repeat}"
        cache.mkdir()
        os.environ["VISLAB_CACHE"] = str(cache)
        clear_memo()
        first.append(timed(load))
        clear_memo()
        hit.append(timed(load))
        shutil.rmtree(cache, ignore_errors=True)
    return first, hit


def _cifar_loader(root: Path):
    from vislab.data.cifar import load_cifar10

    return lambda: (load_cifar10(root, "train"), load_cifar10(root, "test"))


def _faces_loader(root: Path, quick: bool):
    from vislab.config import load_config
    from vislab.studies.faces import Config, load_data

    config = load_config(Config, overrides=[f"data_root={root}", *(QUICK_FACES if quick else [])])
    return lambda: load_data(config)


def _tiny_roots(work: Path) -> Path:
    """<work>/cifar10-jpeg/{train,test}/<class>/*.jpg from the built-in tiny CIFAR, and the
    synthetic LFW under <work>/lfw (written once here, outside the timing)."""
    from vislab.data.builtin import synthetic_lfw, tiny_cifar
    from bench._common import write_jpegs

    for split in ("train", "test"):
        write_jpegs(tiny_cifar(split), work / "cifar10-jpeg" / split)
    lfw = synthetic_lfw(work / "synthetic")
    (work / "lfw").symlink_to(lfw / "lfw")
    return work
