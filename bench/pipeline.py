"""Input pipeline (figure 1) and hidden loading (figure 2) for the cnn study.

    python -m bench pipeline            # the CIFAR-10 JPEG copy: a few minutes on 2 cores
    python -m bench pipeline --quick    # the built-in tiny CIFAR written as JPEGs: seconds

1. One training epoch of Q1_1 (batch 64, SGD, flip + 2-pixel translate on both sides) fed by
   vislab's pipeline (the split decoded once into a uint8 tensor in memory, batches by
   indexing, augmentation on whole uint8 batches) against the common baseline: torchvision
   `ImageFolder` on the JPEG folders + PIL transforms (RandomHorizontalFlip, RandomCrop with
   padding 2, ToTensor, Normalize) + `DataLoader(num_workers=2, shuffle=True)`, the PyTorch
   tutorial's loader. Same model, steps and batch size; figure = baseline s / vislab s.
2. Hidden loading: the cnn study's own epoch (its `augment` and `inputs`, the model's recipe:
   Q1_1 and the default ResNet_fast) against the same training steps on batches made
   beforehand; figure = epoch s / model-only s (1.0: loading costs nothing). To keep the run
   short it covers the first `steps` batches of an epoch, not all of them.
"""

from __future__ import annotations

import dataclasses
import shutil
import tarfile
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from bench._common import alternate, data_root, ratio_row, row, spread, write_jpegs

BATCH = 64  # Q1_1's recipe
STEPS = {"Q1_1": 200, "ResNet_fast": 20}  # figure 2: batches timed per repeat (non-quick)


def run(quick: bool) -> list[dict]:
    from vislab.data.builtin import tiny_cifar
    from vislab.data.cifar import load_cifar10

    root = None if quick else data_root()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        if root is None:
            train = tiny_cifar("train")
            folder = write_jpegs(train, work / "train")
            data = "built-in tiny CIFAR (600 images) as JPEGs"
        else:
            train = load_cifar10(root, "train")  # decoded once (cached); figure 4 times that
            with tarfile.open(root / "cifar10-jpeg" / "cifar10-jpeg-train.tar.gz") as archive:
                archive.extractall(work, filter="data")
            folder = work / "train"
            data = f"CIFAR-10 JPEG copy, {len(train)} training images"
        rows = [input_pipeline(train, folder, data)]
        for model_name in ("Q1_1", "ResNet_fast"):
            rows.append(hidden_loading(train, model_name, steps=5 if quick else STEPS[model_name], data=data))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _q1_1_step():
    """(step(x, y), model): one SGD step of a fresh Q1_1 with the tutorial recipe."""
    from vislab.models.registry import model_entry

    torch.manual_seed(0)
    model = model_entry("Q1_1").build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def input_pipeline(train, folder: Path, data: str) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from vislab.data.batches import Batches, random_flip, random_translate, to_float
    from vislab.engine import epoch_generator
    from vislab.studies.cnn import CIFAR_MEAN, CIFAR_STD

    step = _q1_1_step()

    def vislab_epoch():
        generator = epoch_generator(0, 1)
        for x, y in Batches(train.images, train.labels, BATCH, shuffle=True, drop_last=True):
            x = random_translate(random_flip(x, generator), 2, generator)
            step(to_float(x, CIFAR_MEAN, CIFAR_STD), y)

    transform = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, padding=2),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True)

    def baseline_epoch():
        for x, y in loader:
            step(x, y)

    seconds = alternate({"vislab": vislab_epoch, "baseline": baseline_epoch}, warmup=False)
    return ratio_row("input pipeline: Q1_1 epoch, ImageFolder+DataLoader s / vislab s", seconds["vislab"],
                     seconds["baseline"], target=1.5,
                     note=f"{data}; {len(dataset) // BATCH} steps of {BATCH}; baseline num_workers=2")


def hidden_loading(train, model_name: str, *, steps: int, data: str) -> dict:
    """The cnn study's epoch (augment + inputs + step) vs the steps alone on ready batches."""
    from vislab.data.batches import Batches
    from vislab.engine import epoch_generator
    from vislab.models.registry import model_entry
    from vislab.studies.cnn import Config, augment, inputs, with_recipe

    config = with_recipe(dataclasses.replace(Config(data_root="builtin"), model_name=model_name))
    torch.manual_seed(0)
    model = model_entry(model_name).build()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

    def step(x, y):
        loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def batches():
        generator = epoch_generator(0, 1)
        for index, (x, y) in enumerate(Batches(train.images, train.labels, config.batch_size, shuffle=True,
                                                drop_last=True)):
            if index == steps:
                return
            yield inputs(augment(x, config, generator), config.channels_last), y

    ready = list(batches())

    def epoch():
        for x, y in batches():
            step(x, y)

    def model_only():
        for x, y in ready:
            step(x, y)

    seconds = alternate({"epoch": epoch, "model": model_only})
    ratios = [e / m for e, m in zip(seconds["epoch"], seconds["model"])]
    figures = spread(ratios)
    model_median = spread(seconds["model"])["figure"]
    return row(f"hidden loading: {model_name} epoch s / model-only s", "x", figure=figures["figure"],
               baseline=model_median, ratio=figures["figure"], target=1.1, higher_is_better=False,
               min=figures["min"], max=figures["max"], repeats=figures["repeats"],
               note=f"{data}; first {len(ready)} steps of {config.batch_size} (recipe '{config.augment}', "
                    f"channels_last={config.channels_last}); epoch {spread(seconds['epoch'])['figure']:.4g} s, "
                    f"model only {model_median:.4g} s")
