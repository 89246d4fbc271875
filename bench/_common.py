"""Pieces the speed benchmarks share: repeated timing, rows, each study's default model.

A figure is the median of `repeats` (at least 3) timings; its row also carries the min and the
max. Two things compared in one figure are timed alternately (A B A B ...), so a change in the
machine's load during the run falls on both alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def data_root() -> Path | None:
    """The real data folder ($VISLAB_DATA, else ../shared/data), or None when it is missing."""
    root = Path(os.environ.get("VISLAB_DATA") or REPO.parent / "shared" / "data")
    return root if root.is_dir() else None


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def alternate(works: dict[str, Callable[[], object]], repeats: int = REPEATS,
              warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each work, `repeats` times, interleaved; one untimed warm-up call each first."""
    if warmup:
        for work in works.values():
            work()
    seconds: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            seconds[name].append(timed(work))
    return seconds


def spread(values: list[float]) -> dict:
    """median, min, max and n of `values`, as row fields."""
    return {"figure": statistics.median(values), "min": min(values), "max": max(values), "repeats": len(values)}


def row(name: str, unit: str, *, figure: float | None, baseline: float | None = None, ratio: float | None = None,
        target: float | None = None, higher_is_better: bool = True, note: str = "", **extra) -> dict:
    """One table row; `met` is None where there is no target or no figure."""
    met = None
    if target is not None and figure is not None:
        met = figure >= target if higher_is_better else figure <= target
    return {"name": name, "figure": figure, "unit": unit, "baseline": baseline, "ratio": ratio, "target": target,
            "met": met, "note": note, **extra}


def ratio_row(name: str, ours: list[float], theirs: list[float], *, target: float | None, unit: str = "x",
              what: str = "", note: str = "") -> dict:
    """A speed-up row from paired timings (taken alternately): figure = the median of
    theirs[i] / ours[i] (> 1: ours is faster), with its min and max; baseline is the median
    seconds of `theirs`, and the note gives both medians with their ranges."""
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    detail = (f"{what}ours {ours_median:.4g} s ({min(ours):.4g}..{max(ours):.4g}), "
              f"baseline {theirs_median:.4g} s ({min(theirs):.4g}..{max(theirs):.4g}), n={len(ours)}")
    figures = spread(ratios)
    return row(name, unit, figure=figures["figure"], baseline=theirs_median, ratio=figures["figure"], target=target,
               note=f"{detail}{'; ' + note if note else ''}", seconds=ours_median,
               min=figures["min"], max=figures["max"], repeats=len(ratios))


def write_jpegs(images, folder: Path) -> Path:
    """An ImageFolder tree <folder>/<class>/<index>.jpg of `images` (quality 95)."""
    from torchvision.io import encode_jpeg

    for index, (image, label) in enumerate(zip(images.images, images.labels.tolist())):
        target = folder / images.classes[label] / f"{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_jpeg(image, quality=95).numpy().tobytes())
    return folder


# Each study's default model and batch, built the way the study builds it (registry defaults).
DEFAULT_MODELS = {  # study -> (model name, images per step)
    "cnn": ("ResNet_fast", 256),
    "faces": ("resface", 64),  # 64 pairs: two images each
    "imbalance": ("imb_resnet", 64),
    "latent": ("conv_ae", 128),
}


def default_model(study: str, batch: int | None = None):
    """(model, forward inputs, loss(output) -> scalar) for `study`'s default model."""
    from vislab.models.registry import model_entry

    name, default_batch = DEFAULT_MODELS[study]
    entry = model_entry(name)
    torch.manual_seed(0)
    model = entry.build()
    inputs = entry.example_inputs(batch or default_batch)
    if study == "latent":  # an autoencoder: reconstruction logits against the input
        target = torch.rand_like(inputs[0])

        def loss(output):
            return torch.nn.functional.binary_cross_entropy_with_logits(output.float(), target)
    elif study == "faces":  # pair scores against same/different labels
        same = torch.randint(0, 2, (inputs[0].shape[0],)).float()

        def loss(output):
            return torch.nn.functional.binary_cross_entropy_with_logits(output.float(), same)
    else:
        labels: list[torch.Tensor] = []  # drawn at the first call, when the class count is known

        def loss(output):
            if not labels:
                labels.append(torch.randint(0, output.shape[1], (output.shape[0],),
                                            generator=torch.Generator().manual_seed(0)))
            return torch.nn.functional.cross_entropy(output.float(), labels[0])
    return model, inputs, loss


def training_step(model, inputs, loss, *, precision: str = "fp32", channels_last: bool = False):
    """A function doing one SGD training step (forward, backward, update) of `model` on `inputs`."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            value = loss(model(*inputs))
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


# Each study's default run as (study, overrides): the full run on the real data, and a tiny one
# on the built-in data for --quick (a smoke check of the benchmark, not of the study).
DEFAULT_RUNS = {
    "cnn": ("cnn", []),
    "cnn-Q1_1": ("cnn", ["model_name=Q1_1"]),
    "faces": ("faces", []),
    "imbalance": ("imbalance", []),
    "latent": ("latent", []),
}
TINY_RUNS = {
    "cnn": ["data_root=builtin", "epochs=1"],
    "cnn-Q1_1": ["data_root=builtin", "epochs=1"],
    "faces": ["data_root=builtin", "epochs=1", "pairs_per_epoch=0", "image_size=32", "crop=160",
              "widths=[16,32,64,128]", "embedding_dim=64", "oneshot_trials=50"],
    "imbalance": ["data_root=builtin", "epochs=1", "batch_size=32"],
    "latent": ["data_root=builtin", "epochs=1", "batch_size=64", "fid_samples=200", "classifier.epochs=1",
               "fewlabel.draws=1", "fewlabel.head_epochs=2", "fewlabel.contrastive_epochs=1",
               "fewlabel.contrastive_batch_size=128", "fewlabel.curve=[10]", "fewlabel.curve_draws=1",
               "fewlabel.head_val_size=100", "gan.steps=20", "gan.batch_size=64", "cgan.steps=20",
               "cgan.batch_size=64"],
}


def chosen_runs(default: list[str] | None = None) -> list[str]:
    """Keys of DEFAULT_RUNS to run: those named in $VISLAB_BENCH_STUDIES (comma-separated),
    else `default`, else all."""
    names = [name.strip() for name in os.environ.get("VISLAB_BENCH_STUDIES", "").split(",") if name.strip()]
    unknown = sorted(set(names) - set(DEFAULT_RUNS))
    if unknown:
        raise SystemExit(f"VISLAB_BENCH_STUDIES: unknown {unknown}; choose from {', '.join(DEFAULT_RUNS)}")
    return names or default or list(DEFAULT_RUNS)


def run_overrides(key: str, quick: bool, out: str) -> tuple[str, list[str]]:
    """(study, overrides) of the default run `key`, tiny with `quick`, into `out`."""
    study, overrides = DEFAULT_RUNS[key]
    root = data_root()
    data = TINY_RUNS[key] if quick or root is None else [f"data_root={root}"]
    return study, [*overrides, *data, f"out={out}"]
