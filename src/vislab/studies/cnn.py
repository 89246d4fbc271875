"""The cnn study: CIFAR-10 with the tutorial net and its named variants.

    vislab run cnn --model-name Q1_1 --epochs 2 --data-root ../shared/data

Reads top to bottom: config, data (in-memory uint8, stratified validation split from the
training images; the test set is only for the final figure), model, training, evaluation,
figures. Figures on ../shared/data come from a JPEG copy of CIFAR-10 and sit slightly below
those on the original pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vislab.analysis.metrics import classification_metrics
from vislab.analysis.plots import bar_chart, confusion_matrix_figure, training_curves
from vislab.config import CommonConfig, at_least, in_range, one_of, to_dict
from vislab.data import BUILTIN, ImageSet, resolve_data_root
from vislab.data.batches import Batches, random_flip, random_translate, to_float
from vislab.data.splits import stratified_split
from vislab.engine import epoch_generator, fit, load_best_weights, log, make_fabric, predict
from vislab.errors import VislabError
from vislab.models.registry import count_macs, count_parameters, model_entry
from vislab.runs import Run

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Config(CommonConfig):
    epochs: int = 10  # training epochs
    batch_size: int = 64  # images per step
    model_name: str = "Q1_1"  # a registered cnn model (`vislab models --study cnn`)
    optimizer: str = "sgd"  # 'sgd' (Nesterov momentum) or 'adamw'
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty (decoupled for adamw)
    schedule: str = "onecycle"  # learning-rate schedule: 'onecycle', 'cosine' or 'constant'
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    augment: str = "flip-translate"  # 'none', 'flip' or 'flip-translate' (on uint8 batches)
    translate: int = 2  # largest shift in pixels for 'flip-translate'
    val_fraction: float = 0.1  # share of each class of the training images held out for validation
    patience: int = 0  # stop after this many epochs without a lower val_loss (0 = never)
    train_limit: int = 0  # train on only this many images, stratified (0 = all): quick looks

    def __post_init__(self) -> None:
        super().__post_init__()
        model_entry(self.model_name)  # an unknown name fails now, listing the close ones
        one_of("optimizer", self.optimizer, ("sgd", "adamw"))
        one_of("schedule", self.schedule, ("onecycle", "cosine", "constant"))
        one_of("augment", self.augment, ("none", "flip", "flip-translate"))
        in_range("val_fraction", self.val_fraction, 0.0, 0.5)
        in_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        at_least("lr", self.lr, 0.0)
        at_least("patience", self.patience, 0)
        at_least("train_limit", self.train_limit, 0)


DEMO = {"data_root": BUILTIN, "epochs": 3, "batch_size": 32}


def run_name(config: Config) -> str:
    return config.model_name


# ---------------------------------------------------------------------------------------------
# data


def load_cifar(config: Config) -> tuple[ImageSet, ImageSet]:
    root = resolve_data_root(config.data_root)
    if root == BUILTIN:
        from vislab.data.builtin import tiny_cifar

        return tiny_cifar("train"), tiny_cifar("test")
    from vislab.data.cifar import load_cifar10

    train, test = load_cifar10(root, "train"), load_cifar10(root, "test")
    missing = sorted(set(range(len(test.classes))) - set(test.labels.unique().tolist()))
    if missing:
        raise VislabError(f"the CIFAR-10 test split has no images of class {[test.classes[i] for i in missing]}; "
                          "restore the missing class folder")
    return train, test


def split(config: Config, train: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(train, validation), stratified and seeded; optionally a stratified subset to train on."""
    keep, held_out = stratified_split(train.labels, config.val_fraction, config.seed)
    train_part, val_part = train.subset(keep), train.subset(held_out)
    if config.train_limit and config.train_limit < len(train_part):
        keep, _ = stratified_split(train_part.labels, 1 - config.train_limit / len(train_part), config.seed)
        train_part = train_part.subset(keep)
    return train_part, val_part


def augment(x: torch.Tensor, config: Config, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, 32, 32) uint8 -> the same, flipped and shifted per image."""
    if config.augment in ("flip", "flip-translate"):
        x = random_flip(x, generator)
    if config.augment == "flip-translate" and config.translate:
        x = random_translate(x, config.translate, generator)
    return x


def inputs(x: torch.Tensor) -> torch.Tensor:
    return to_float(x, CIFAR_MEAN, CIFAR_STD)


# ---------------------------------------------------------------------------------------------
# training


def make_optimizer(config: Config, model: torch.nn.Module, steps_per_epoch: int):
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                        pct_start=0.25)
    elif config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def run(config: Config, run: Run, resume: dict | None = None) -> dict:
    fabric = make_fabric(config)
    train_full, test = load_cifar(config)
    train, val = split(config, train_full)
    log(f"cnn: {len(train)} train / {len(val)} validation / {len(test)} test images, model {config.model_name}")

    model = model_entry(config.model_name).build()
    params = count_parameters(model)
    macs = count_macs(model, (torch.zeros(1, *train.images.shape[1:]),))
    steps_per_epoch = len(Batches(train.images, train.labels, config.batch_size, shuffle=True, drop_last=True))
    optimizer, scheduler = make_optimizer(config, model, steps_per_epoch)

    def train_batches(epoch: int):
        generator = epoch_generator(config.seed, epoch)
        batches = Batches(train.images, train.labels, config.batch_size, shuffle=True, seed=config.seed,
                          epoch=epoch, drop_last=True, rank=fabric.global_rank, world_size=fabric.world_size)
        return _Mapped(batches, lambda batch: (inputs(augment(batch[0], config, generator)), batch[1]))

    def training_step(model, batch):
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    def validate(model) -> dict[str, float]:
        logits = predict(model, Batches(val.images, val.labels, 500, shuffle=False), _forward)
        return {"val_loss": F.cross_entropy(logits, val.labels).item(),
                "val_acc": (logits.argmax(1) == val.labels).float().mean().item()}

    started = time.perf_counter()
    model, state = fit(fabric, model, optimizer, run=run, config=to_dict(config), epochs=config.epochs,
                       seed=config.seed, train_batches=train_batches, training_step=training_step,
                       validate=validate, scheduler=scheduler, scheduler_per_step=True,
                       patience=config.patience, resume=resume)
    train_seconds = time.perf_counter() - started
    best_epoch = load_best_weights(model, run)
    rows = run.metrics()
    summary = {
        "model_name": config.model_name,
        "params": params,
        "macs": macs,
        "best_val_accuracy": max(float(row["val_acc"]) for row in rows),
        "best_epoch": best_epoch,
        "seconds_per_epoch": sum(float(row["seconds"]) for row in rows) / len(rows),
        "train_seconds": round(train_seconds, 1),
        "data": "builtin" if config.data_root == BUILTIN else "cifar10-jpeg (JPEG copy: slightly below original-pixel figures)",
        **test_figures(model, test, run),
    }
    run.plot("curves", training_curves(rows, title=config.model_name))
    return summary


def evaluate(config: Config, checkpoint: dict, run: Run) -> dict:
    from vislab.engine import load_model_state

    make_fabric(config)
    _, test = load_cifar(config)
    model = model_entry(config.model_name).build()
    load_model_state(model, checkpoint["model"], "the checkpoint")
    return {"model_name": config.model_name, "params": count_parameters(model),
            "checkpoint_epoch": checkpoint.get("epoch"), **test_figures(model, test, run)}


def test_figures(model: torch.nn.Module, test: ImageSet, run: Run) -> dict:
    """Test accuracy, per-class accuracy (table and bars) and the confusion matrix."""
    logits = predict(model, Batches(test.images, test.labels, 500, shuffle=False), _forward)
    figures = classification_metrics(test.labels, logits.argmax(1), test.classes)
    per_class = {name: values["accuracy"] for name, values in figures["per_class"].items()}
    run.table("per_class_test", [{"class": name, "accuracy": f"{acc:.4f}",
                                  "support": figures["per_class"][name]["support"]} for name, acc in per_class.items()])
    run.plot("per_class_accuracy", bar_chart(per_class, ylabel="test accuracy", title="Per-class test accuracy"))
    run.plot("confusion_matrix", confusion_matrix_figure(figures["confusion_matrix"], test.classes, "Test set"))
    return {"test_accuracy": figures["accuracy"], "per_class_accuracy": per_class}


def _forward(model, batch) -> torch.Tensor:
    return model(inputs(batch[0]))


class _Mapped:
    """`batches` with `fn` applied to each batch, keeping len()."""

    def __init__(self, batches, fn) -> None:
        self.batches, self.fn = batches, fn

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return map(self.fn, self.batches)
