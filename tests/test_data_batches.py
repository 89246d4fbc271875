"""In-memory batches (order per (seed, epoch), disjoint shards) and batch augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vislab.data.batches import Batches, random_flip, random_translate, to_float
from vislab.errors import VislabError


def dataset(count: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 3, 4, 4).contiguous()
    return images, torch.arange(count)


def order(batches: Batches) -> list[int]:
    return [label for _, labels in batches for label in labels.tolist()]


def test_unshuffled_batches_cover_everything_in_order() -> None:
    images, labels = dataset(10)
    batches = Batches(images, labels, 4, shuffle=False)
    sizes = [len(y) for _, y in batches]
    assert sizes == [4, 4, 2] and len(batches) == 3 and order(batches) == list(range(10))
    for x, y in batches:
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with labels
    dropped = Batches(images, labels, 4, shuffle=False, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]


def test_order_depends_only_on_seed_and_epoch() -> None:
    images, labels = dataset(50)
    first = order(Batches(images, labels, 8, shuffle=True, seed=3, epoch=2))
    assert first == order(Batches(images, labels, 8, shuffle=True, seed=3, epoch=2))
    assert sorted(first) == list(range(50))
    resumed = Batches(images, labels, 8, shuffle=True, seed=3)
    resumed.set_epoch(2)
    assert order(resumed) == first
    others = [order(Batches(images, labels, 8, shuffle=True, seed=s, epoch=e)) for s, e in ((3, 1), (4, 2), (2, 3))]
    assert all(other != first for other in others)
    assert order(Batches(images, labels, 8, shuffle=True, seed=0, epoch=1)) != order(
        Batches(images, labels, 8, shuffle=True, seed=1, epoch=0)
    )


def test_iteration_does_not_touch_the_global_generator() -> None:
    images, labels = dataset(20)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    order(Batches(images, labels, 4, shuffle=True, seed=9))
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize(("count", "world_size"), [(10, 3), (12, 4), (5, 8)])
def test_shards_are_disjoint_equal_and_cover_everything(count: int, world_size: int) -> None:
    images, labels = dataset(count)
    shards = [
        order(Batches(images, labels, 2, shuffle=True, seed=1, epoch=5, rank=rank, world_size=world_size))
        for rank in range(world_size)
    ]
    sizes = {len(shard) for shard in shards}
    assert len(sizes) == 1  # equal, so every rank runs the same number of steps
    everything = [index for shard in shards for index in shard]
    assert set(everything) == set(range(count))
    padding = len(everything) - count
    assert padding < world_size or count < world_size
    if count % world_size == 0:
        assert sorted(everything) == list(range(count))  # no padding: truly disjoint
    batch_counts = {len(Batches(images, labels, 2, shuffle=True, rank=r, world_size=world_size)) for r in range(world_size)}
    assert len(batch_counts) == 1


def test_bad_arguments() -> None:
    images, labels = dataset(4)
    with pytest.raises(VislabError, match="batch_size"):
        Batches(images, labels, 0, shuffle=True)
    with pytest.raises(ValueError, match="rank"):
        Batches(images, labels, 2, shuffle=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="labels"):
        Batches(images, labels[:3], 2, shuffle=True)


def test_empty_dataset_has_no_batches() -> None:
    images, labels = dataset(0)
    assert len(Batches(images, labels, 4, shuffle=True, world_size=2)) == 0
    assert order(Batches(images, labels, 4, shuffle=True, world_size=2, rank=1)) == []


def random_images(dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    images = torch.randint(0, 256, (64, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return images.to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_flip_flips_some_samples_whole(dtype: torch.dtype) -> None:
    x = random_images(dtype)
    out = random_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    assert out.dtype == dtype
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(1)))


def reference_translate(x: torch.Tensor, pad: int, shifts: torch.Tensor, mode: str) -> torch.Tensor:
    """Pad, then crop at (pad + dy, pad + dx), one sample at a time."""
    padded = F.pad(x.float(), (pad,) * 4, mode="constant" if mode == "zeros" else "reflect")
    height, width = x.shape[2:]
    crops = [
        padded[b, :, pad + dy : pad + dy + height, pad + dx : pad + dx + width]
        for b, (dy, dx) in enumerate(zip(shifts[0].tolist(), shifts[1].tolist()))
    ]
    return torch.stack(crops).to(x.dtype)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_translate_matches_pad_and_crop(mode: str, dtype: torch.dtype) -> None:
    x, pad = random_images(dtype), 3
    shifts = torch.randint(-pad, pad + 1, (2, len(x)), generator=torch.Generator().manual_seed(7))
    out = random_translate(x, pad, torch.Generator().manual_seed(7), mode=mode)
    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
    assert torch.equal(out, reference_translate(x, pad, shifts, mode))
    assert torch.equal(random_translate(x, 0, torch.Generator()), x)


def test_to_float() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.allclose(to_float(x).flatten(), torch.tensor([0.0, 0.2, 1.0]))
    normalised = to_float(x, mean=[0.0, 0.2, 0.5], std=[1.0, 0.5, 0.25])
    assert normalised.dtype == torch.float32
    assert torch.allclose(normalised.flatten(), torch.tensor([0.0, 0.0, 2.0]))
    with pytest.raises(VislabError, match="one per channel"):
        to_float(x, mean=[0.5], std=[0.5])
