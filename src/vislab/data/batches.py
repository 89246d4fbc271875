"""In-memory batching and augmentation on whole uint8 batches.

Small-image datasets fit in memory as one uint8 tensor, so batching is indexing and
augmentation is a handful of tensor ops per batch (as in airbench): no worker processes, no
per-sample Python. The batch order depends only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch

from vislab.errors import VislabError


def _generator(seed: int, epoch: int) -> torch.Generator:
    # The CPU generator (mt19937) keeps only the low 32 bits of its seed, so `seed << 32 | epoch`
    # would ignore `seed`, and `seed + epoch` would give (0, 1) and (1, 0) the same order:
    # hash both into 32 bits instead.
    digest = hashlib.blake2b(f"{seed},{epoch}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big"))


class Batches:
    """Batches of (images uint8 (B, C, H, W), labels (B,)) from tensors held in memory.

    With `world_size` > 1 each rank takes a disjoint shard of equal size, padded by wrapping
    around the (shuffled) order like `DistributedSampler`. `drop_last` drops a final batch
    smaller than `batch_size`. Call `set_epoch` (or pass `epoch`) to reshuffle.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise VislabError(f"batch_size is {batch_size}; set it to 1 or more")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_size(self) -> int:
        """Samples this rank sees per epoch (padding included)."""
        return math.ceil(len(self.images) / self.world_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in batch order."""
        total = len(self.images)
        if self.shuffle:
            order = torch.randperm(total, generator=_generator(self.seed, self.epoch))
        else:
            order = torch.arange(total)
        if self.world_size == 1 or total == 0:
            return order
        padded = self.shard_size() * self.world_size
        order = order.repeat(math.ceil(padded / total))[:padded]  # wrap around to pad
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size() // self.batch_size
        return math.ceil(self.shard_size() / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.indices()
        for batch in range(len(self)):
            chosen = index[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield self.images[chosen], self.labels[chosen]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each sample of (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5  # (B,), drawn on the CPU
    flip = flip.to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_translate(
    x: torch.Tensor, pad: int, generator: torch.Generator, *, mode: str = "zeros"
) -> torch.Tensor:
    """Shift each sample of (B, C, H, W) by its own random (dy, dx) in [-pad, pad].

    The same as padding by `pad` (zeros or reflection) and taking a random crop of the
    original size, done with one gather instead of a loop over samples.
    """
    if pad == 0:
        return x
    if mode not in ("zeros", "reflect"):
        raise ValueError(f"padding mode {mode!r}: use zeros or reflect")
    batch, _, height, width = x.shape
    if mode == "reflect" and pad >= min(height, width):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels")
    shifts = torch.randint(-pad, pad + 1, (2, batch), generator=generator).to(x.device)
    rows = torch.arange(height, device=x.device) + shifts[0].view(-1, 1)  # (B, H) source rows
    cols = torch.arange(width, device=x.device) + shifts[1].view(-1, 1)  # (B, W) source cols
    if mode == "reflect":  # -1 -> 1, H -> H - 2 (like F.pad's 'reflect'); needs pad < size
        rows = (height - 1) - ((height - 1) - rows.abs()).abs()
        cols = (width - 1) - ((width - 1) - cols.abs()).abs()
    inside = ((rows >= 0) & (rows < height)).view(batch, 1, height, 1) & (
        (cols >= 0) & (cols < width)
    ).view(batch, 1, 1, width)
    samples = torch.arange(batch, device=x.device).view(-1, 1, 1)
    # Advanced indices around a slice put their dims first: (B, H, W, C) -> (B, C, H, W).
    source_rows = rows.clamp(0, height - 1).view(batch, height, 1)
    source_cols = cols.clamp(0, width - 1).view(batch, 1, width)
    out = x[samples, :, source_rows, source_cols]
    out = out.permute(0, 3, 1, 2)
    return torch.where(inside, out, torch.zeros((), dtype=x.dtype, device=x.device)).contiguous()


def to_float(
    x_uint8: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], then (x - mean) / std per channel if given."""
    x = x_uint8.float().div_(255)
    if mean is not None or std is not None:
        channels = x.shape[1]
        mean_t = torch.tensor(mean if mean is not None else [0.0] * channels, device=x.device)
        std_t = torch.tensor(std if std is not None else [1.0] * channels, device=x.device)
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise VislabError(
                f"mean/std have {mean_t.numel()}/{std_t.numel()} values for {channels} channels; "
                f"give one per channel"
            )
        x = x.sub_(mean_t.view(1, -1, 1, 1)).div_(std_t.view(1, -1, 1, 1))
    return x.contiguous()
