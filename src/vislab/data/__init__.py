"""Data sources, one module per format. Each returns decoded uint8 tensors and labels.

Loaders never return file handles or PIL images: an `ImageSet` holds the whole split in
memory as one uint8 tensor, so augmentation runs on whole batches (see `batches.py`).
All loaders read from a data root laid out like ../shared/data:

    <root>/lfw/  <root>/mnist/  <root>/cifar10-jpeg/  <root>/apml-ex1/

`resolve_data_root` turns the `data_root` config value into a path (or `BUILTIN`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

BUILTIN = "builtin"  # `--data-root=builtin` selects the small generated sets in builtin.py


@dataclass(frozen=True)
class ImageSet:
    """One split in memory: images (N, C, H, W) uint8, labels (N,) int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert self.labels.shape == (self.images.shape[0],), (self.labels.shape, self.images.shape)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)


def resolve_data_root(data_root: str) -> Path | str:
    """'' -> $VISLAB_DATA, else ./data; 'builtin' stays 'builtin'; anything else is a path."""
    if data_root == BUILTIN:
        return BUILTIN
    return Path(data_root or os.environ.get("VISLAB_DATA") or "data").expanduser()


def decode_jpegs(blobs: list[bytes], names: list[str], *, grayscale: bool = False) -> list[torch.Tensor]:
    """Decode JPEG bytes to uint8 (C, H, W) tensors (C = 1 if grayscale else 3).

    Shared by the CIFAR and LFW loaders. A file that does not decode is a `VislabError`
    naming it (`names[i]` is the path or archive member of `blobs[i]`).
    """
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    from vislab.errors import VislabError

    mode = ImageReadMode.GRAY if grayscale else ImageReadMode.RGB
    tensors = []
    for blob, name in zip(blobs, names, strict=True):
        if not blob:
            raise VislabError(f"{name}: empty file, not a JPEG; remove or replace it")
        tensors.append(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    images: list[torch.Tensor] = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
        warnings.simplefilter("ignore", DeprecationWarning)
        chunk = 1024
        for start in range(0, len(tensors), chunk):
            part = tensors[start : start + chunk]
            try:
                images.extend(decode_jpeg(part, mode=mode))
            except RuntimeError:  # one bad file fails the whole list: find which
                for offset, data in enumerate(part):
                    try:
                        images.append(decode_jpeg(data, mode=mode))
                    except RuntimeError as error:
                        reason = str(error).strip().splitlines()[0] if str(error).strip() else "bad data"
                        raise VislabError(
                            f"{names[start + offset]}: not a readable JPEG ({reason}); "
                            f"remove or replace this file"
                        ) from None
    return images


def check_links_inside(folder: str | Path, files: list[str], *, levels: int) -> None:
    """Refuse a file under `folder` that is, or sits in, a symbolic link leading outside it.

    `files` are paths `levels` deep under `folder` (LFW: person/image = 2). The folder itself
    may be a link (datasets are often linked in); links inside it come from whatever archive
    was unpacked there, and must not make vislab read files elsewhere. Costs one lstat per
    file and per subfolder; realpath only for the links.
    """
    from vislab.errors import VislabError

    folder = os.fspath(folder)
    real_folder = os.path.realpath(folder)
    linked_dirs: dict[str, bool] = {}
    for file in files:
        parts = [file]
        parent = file
        for _ in range(levels - 1):
            parent = os.path.dirname(parent)
            if parent not in linked_dirs:
                linked_dirs[parent] = os.path.islink(parent)
            parts.append(parent)
        if not (os.path.islink(file) or any(linked_dirs.get(part, False) for part in parts[1:])):
            continue
        target = os.path.realpath(file)
        if os.path.commonpath([real_folder, target]) != real_folder:
            link = next(part for part in reversed(parts) if os.path.islink(part))
            raise VislabError(f"{link}: a symbolic link to {os.path.realpath(link)}, outside {folder}; "
                              "copy the files in instead of linking them")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch CPU ops on one thread inside the block, then restore the setting.

    Decoding-side ops on small images (resize of a 150x150 face, drawing a 250x250 picture)
    gain little from intra-op threads, and on a busy machine the threads' spin-waiting makes
    them far slower: resizing 512 LFW crops took 8 s with 2 threads and 0.4 s with 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
