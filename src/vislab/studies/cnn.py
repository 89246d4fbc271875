"""The cnn study: CIFAR-10 with the tutorial net, its named variants, linear nets, pixel permutations.

    vislab run cnn --model-name Q1_4 --epochs 15          # the report's command line
    vislab run cnn --model-name Q1_1                      # the tutorial net with its recipe
    vislab run cnn                                        # the strong model (ResNet_fast) with its recipe
    vislab run cnn --sweep 'Q1_*' --epochs 4              # every Q1 variant: one table, a grid of curves
    vislab run cnn --sweep 'Q1_1,Q2_*'                    # linear-only nets next to the tutorial net
    vislab run cnn --sweep Q1_1,MLP_control --permute none,fixed,per-image   # Q3 / Q4

Reads top to bottom: recipes and config; data (in-memory uint8, a stratified validation split
of the training images; the test set only for the final figures); pixel permutations; one
variant's training and evaluation; a sweep over variants; figures. Figures on ../shared/data
come from a JPEG copy of CIFAR-10 and sit slightly below those on the original pixels.

Per-model recipes: the training keys below default to None, meaning "the model's recipe"
(RECIPES): the tutorial recipe for the report's small nets, the fast recipe for ResNet_fast.
A key given on the command line or in a YAML file wins; the run folder's config.yaml holds the
resolved values.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vislab.analysis.metrics import classification_metrics
from vislab.analysis.plots import bar_chart, confusion_matrix_figure, data_overview, image_grid, training_curves
from vislab.config import CommonConfig, at_least, check_lr_scaling, in_range, one_of, to_dict, to_yaml
from vislab.data import BUILTIN, ImageSet, resolve_data_root
from vislab.data.batches import Batches, random_flip, random_translate, to_float
from vislab.data.splits import stratified_split
from vislab.engine import (Sized, epoch_generator, fit, load_best_weights, local_batch_size, log, make_fabric,
                           make_optimizer, predict, resolve_precision, scaled_lr, unwrap)
from vislab.errors import VislabError, did_you_mean
from vislab.models.registry import count_macs, count_parameters, list_models, model_entry
from vislab.runs import Run

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PERMUTE_MODES = ("none", "fixed", "per-image")
# The report's figures for Q3 (one fixed pixel permutation) and Q4 (a fresh one per image), Q1_1.
REPORT_TEST_ACCURACY = {("Q1_1", "fixed"): 0.40, ("Q1_1", "per-image"): 0.25}

# Training recipes, per model. The tutorial recipe trains the report's small nets (Q1_*, Q2_*,
# MLP_control) in about two minutes for Q1_1 on a 2-core CPU, without augmentation as in the
# report (augmentation would hide the over-fitting its curves are about); the fast recipe is the one of the
# fast CIFAR-10 trainers (batch-norm ResNet, big batches, label smoothing, flip-translate, flip
# test-time augmentation, channels_last: 1.4-1.6x faster here) with bf16 autocast where the
# hardware computes in bf16 ('auto': 1.6x faster per epoch on this AVX512-BF16 CPU, and 30
# epochs fit in 15 minutes; without bf16 instructions it is ~10x slower, so fp32 there).
RECIPES = {
    "tutorial": {"epochs": 5, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
                 "label_smoothing": 0.0, "augment": "none", "flip_tta": False, "channels_last": False,
                 "precision": "32-true"},
    "fast": {"epochs": 30, "batch_size": 256, "optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4,
             "label_smoothing": 0.2, "augment": "flip-translate", "flip_tta": True, "channels_last": True,
             "precision": "auto"},
}
RECIPE_OF_MODEL = {"ResNet_fast": "fast"}  # every other model: "tutorial"


def recipe_name(model_name: str) -> str:
    return RECIPE_OF_MODEL.get(model_name, "tutorial")


@dataclass(frozen=True)
class Config(CommonConfig):
    model_name: str = "ResNet_fast"  # a registered cnn model (`vislab models --study cnn`); the default is the strong model
    epochs: int | None = None  # training epochs (None: the model's recipe)
    batch_size: int | None = None  # images per step, over all processes (None: the model's recipe)
    optimizer: str | None = None  # 'sgd' (Nesterov momentum) or 'adamw' (None: the model's recipe)
    lr: float | None = None  # peak learning rate (None: the model's recipe)
    lr_scaling: str = "none"  # learning rate for another batch_size: 'none' (lr as given), 'linear' or 'sqrt' (lr times (batch_size / lr_batch_size), or its square root)
    lr_batch_size: int = 0  # global batch size the lr was tuned for (needed by lr_scaling 'linear' and 'sqrt')
    momentum: float = 0.9  # SGD momentum
    weight_decay: float | None = None  # L2 penalty, decoupled for adamw (None: the model's recipe)
    schedule: str = "onecycle"  # learning-rate schedule: 'onecycle', 'cosine' or 'constant'
    label_smoothing: float | None = None  # cross-entropy label smoothing (None: the model's recipe)
    augment: str | None = None  # 'none', 'flip' or 'flip-translate', on uint8 batches (None: the model's recipe)
    translate: int = 2  # largest shift in pixels for 'flip-translate'
    flip_tta: bool | None = None  # average the logits of each test image and its mirror image (None: the model's recipe)
    channels_last: bool | None = None  # NHWC memory layout for model and batches (None: the model's recipe)
    precision: str | None = None  # '32-true', 'bf16-mixed' or 'auto' (bf16 where the hardware has it) (None: the model's recipe)
    permute: str = "none"  # pixel permutation of every image, train and test alike: 'none', 'fixed' (one seeded permutation, Q3), 'per-image' (a fresh one per image, Q4); comma-separated to compare several
    sweep: str = ""  # comma-separated model names or glob patterns ('Q1_*', 'Q1_1,Q2_*') to train one after another into one table ('' = model_name only)
    val_fraction: float = 0.1  # share of each class of the training images held out for validation
    patience: int = 0  # stop after this many epochs without a lower val_loss (0 = never)
    train_limit: int = 0  # train on only this many images, stratified (0 = all): quick looks

    def __post_init__(self) -> None:
        model_entry(self.model_name)  # an unknown name fails now, listing the close ones
        if any(getattr(self, key) is None for key in RECIPES["tutorial"]):
            with_recipe(self)  # checks the config as it will run (None keys filled in)
            return
        super().__post_init__()
        one_of("optimizer", self.optimizer, ("sgd", "adamw"))
        one_of("schedule", self.schedule, ("onecycle", "cosine", "constant"))
        check_lr_scaling(self.lr_scaling, self.lr_batch_size)
        one_of("augment", self.augment, ("none", "flip", "flip-translate"))
        for mode in self.permute_modes():
            one_of("permute", mode, PERMUTE_MODES)
        self.models()  # every sweep pattern matches a model
        in_range("val_fraction", self.val_fraction, 0.0, 0.5)
        in_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        at_least("lr", self.lr, 0.0)
        at_least("translate", self.translate, 0)
        at_least("patience", self.patience, 0)
        at_least("train_limit", self.train_limit, 0)

    def permute_modes(self) -> list[str]:
        return [mode.strip() for mode in self.permute.split(",")]

    def models(self) -> list[str]:
        """model_name, or the models the sweep's patterns match, in registration order."""
        if not self.sweep:
            return [self.model_name]
        names = list_models(study="cnn")
        chosen: list[str] = []
        for pattern in (item.strip() for item in self.sweep.split(",")):
            matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                raise VislabError(f"config key 'sweep': {pattern!r} matches no cnn model"
                                  f"{did_you_mean(pattern, names)} (`vislab models --study cnn` lists them)")
            chosen += [name for name in matched if name not in chosen]
        return chosen


def with_recipe(config: Config) -> Config:
    """`config` with every None training key taken from its model's recipe."""
    recipe = RECIPES[recipe_name(config.model_name)]
    return dataclasses.replace(config, **{key: value for key, value in recipe.items()
                                          if getattr(config, key) is None})


DEMO = {"data_root": BUILTIN, "epochs": 3, "sweep": "Q1_1,MLP_control", "permute": "none,fixed"}


def run_name(config: Config) -> str:
    name = f"sweep-{config.sweep}" if config.sweep else config.model_name
    return name + ("" if config.permute == "none" else f"-{config.permute}")


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


def inputs(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    x = to_float(x, CIFAR_MEAN, CIFAR_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------------
# pixel permutations (Q3, Q4): the H*W pixel positions are shuffled, the C values of a pixel
# move together (colours stay), as in the report's `temp[:, shuffle_idx]`.

FIXED_STREAM, TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 101, 102, 103, 104  # epoch_generator streams


def permute_pixels(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the same with out[b, :, p] = x[b, :, order[p]] for an order of shape
    (H*W,) shared by the batch, or x[b, :, order[b, p]] for one order per image (B, H*W)."""
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    if order.ndim == 1:
        return flat[:, :, order].reshape(x.shape)
    index = order.unsqueeze(1).expand(batch, channels, height * width)  # (B, C, H*W)
    return flat.gather(2, index).reshape(x.shape)


def fixed_order(seed: int, pixels: int) -> torch.Tensor:
    """The one permutation of `pixels` positions that `permute=fixed` applies to every image."""
    return torch.randperm(pixels, generator=epoch_generator(seed, 0, FIXED_STREAM))


def random_orders(count: int, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """(count, pixels): an independent uniform permutation per row (argsort of random keys)."""
    return torch.rand(count, pixels, generator=generator).argsort(dim=1)


def permute(x: torch.Tensor, mode: str, seed: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) permuted by `mode`; `generator` draws the per-image permutations."""
    pixels = x.shape[-2] * x.shape[-1]
    if mode == "none":
        return x
    if mode == "fixed":
        return permute_pixels(x, fixed_order(seed, pixels))
    return permute_pixels(x, random_orders(x.shape[0], pixels, generator))


def permuted_set(images: ImageSet, mode: str, seed: int, stream: int) -> ImageSet:
    """A whole evaluation set permuted once (per-image permutations drawn from `stream`)."""
    if mode == "none":
        return images
    generator = epoch_generator(seed, 0, stream)
    parts = [permute(chunk, mode, seed, generator) for chunk in images.images.split(1000)]
    return ImageSet(torch.cat(parts), images.labels, images.classes)


# ---------------------------------------------------------------------------------------------
# training one variant


def train_variant(config: Config, run: Run, train: ImageSet, val: ImageSet, test: ImageSet,
                  resume: dict | None = None) -> dict:
    """Train config.model_name with config.permute on `train`; returns its summary."""
    fabric = make_fabric(config)
    val = permuted_set(val, config.permute, config.seed, VAL_STREAM)
    test = permuted_set(test, config.permute, config.seed, TEST_STREAM)

    model = model_entry(config.model_name).build()
    params = count_parameters(model)
    macs = count_macs(model, (torch.zeros(1, *train.images.shape[1:]),))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # batch_size is global: each of the world_size processes takes its share of every batch, so
    # that the union of the shards of step k is the batch a single process would train on
    batch_size = local_batch_size(fabric, config.batch_size)
    steps_per_epoch = len(Batches(train.images, train.labels, batch_size, shuffle=True, drop_last=True,
                                  rank=fabric.global_rank, world_size=fabric.world_size))
    if steps_per_epoch == 0:
        raise VislabError(f"{len(train)} training images make no batch of batch_size {config.batch_size}; "
                          "lower batch_size or raise train_limit")
    lr = scaled_lr(config.lr, batch_size=config.batch_size, scaling=config.lr_scaling,
                   reference_batch_size=config.lr_batch_size)
    optimizer, scheduler = make_optimizer(model.parameters(), name=config.optimizer, lr=lr, momentum=config.momentum,
                                          weight_decay=config.weight_decay, schedule=config.schedule,
                                          total_steps=config.epochs * steps_per_epoch)

    def train_batches(epoch: int):
        generator = epoch_generator(config.seed, epoch)
        permutations = epoch_generator(config.seed, epoch, TRAIN_STREAM)  # fresh per image per epoch
        batches = Batches(train.images, train.labels, batch_size, shuffle=True, seed=config.seed,
                          epoch=epoch, drop_last=True, rank=fabric.global_rank, world_size=fabric.world_size)

        def prepare(batch):  # augment the image, then permute its pixels
            x = permute(augment(batch[0], config, generator), config.permute, config.seed, permutations)
            return inputs(x, config.channels_last), batch[1]

        return Sized(map(prepare, batches), len(batches))

    def training_step(model, batch):
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    forward = _forward(config)

    def validate(model) -> dict[str, float]:
        logits = predict(model, Batches(val.images, val.labels, 500, shuffle=False), forward)
        return {"val_loss": F.cross_entropy(logits, val.labels).item(),
                "val_acc": (logits.argmax(1) == val.labels).float().mean().item()}

    started, cpu_started = time.perf_counter(), time.process_time()
    model, state = fit(fabric, model, optimizer, run=run, config=to_dict(config), epochs=config.epochs,
                       seed=config.seed, train_batches=train_batches, training_step=training_step,
                       validate=validate, scheduler=scheduler, scheduler_per_step=True,
                       patience=config.patience, resume=resume)
    train_seconds = time.perf_counter() - started
    # CPU seconds of this process: on a shared machine a fairer measure of the work than wall time
    train_cpu_seconds = time.process_time() - cpu_started
    best_epoch = load_best_weights(model, run)
    rows = run.metrics()
    summary = {
        "model_name": config.model_name,
        "permute": config.permute,
        "params": params,
        "macs": macs,
        "best_val_accuracy": max(float(row["val_acc"]) for row in rows),
        "best_epoch": best_epoch,
        "seconds_per_epoch": round(sum(float(row["seconds"]) for row in rows) / len(rows), 2),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "num_threads": torch.get_num_threads(),
        "epochs": len(rows),
        "train_images": len(train),
        "recipe": recipe_name(config.model_name),
        "precision": resolve_precision(config.precision, config.accelerator),
        "data": _data_note(config),
        **test_figures(unwrap(model), test, run, config),
    }
    run.plot("curves", training_curves(rows, title=_title(config)))
    return summary


def test_figures(model: torch.nn.Module, test: ImageSet, run: Run, config: Config) -> dict:
    """Test accuracy, per-class accuracy (table and bars) and the confusion matrix."""
    logits = predict(model, Batches(test.images, test.labels, 500, shuffle=False), _forward(config))
    figures = classification_metrics(test.labels, logits.argmax(1), test.classes)
    per_class = {name: values["accuracy"] for name, values in figures["per_class"].items()}
    run.table("per_class_test", [{"class": name, "accuracy": f"{acc:.4f}",
                                  "support": figures["per_class"][name]["support"]} for name, acc in per_class.items()])
    title = f"{_title(config)}: per-class test accuracy"
    run.plot("per_class_accuracy", bar_chart(per_class, ylabel="test accuracy", title=title))
    run.plot("confusion_matrix", confusion_matrix_figure(figures["confusion_matrix"], test.classes, _title(config)))
    return {"test_accuracy": figures["accuracy"], "per_class_accuracy": per_class}


def _forward(config: Config):
    """batch -> logits; with flip_tta, the mean of the logits of the image and its mirror image
    (not with a pixel permutation: mirroring a permuted image means nothing)."""
    tta = config.flip_tta and config.permute == "none"

    def forward(model, batch) -> torch.Tensor:
        x = inputs(batch[0], config.channels_last)
        logits = model(x)
        return (logits + model(x.flip(-1))) / 2 if tta else logits

    return forward


# ---------------------------------------------------------------------------------------------
# the run: one variant, or a sweep over (model, permutation) pairs into one table


def run(config: Config, run: Run, resume: dict | None = None) -> dict:
    train_full, test = load_cifar(config)
    train, val = split(config, train_full)
    data_overview(run, {"train": (train.images, train.labels), "validation": (val.images, val.labels),
                        "test": (test.images, test.labels)}, test.classes, title=_data_note(config), seed=config.seed)
    variants = [(name, mode) for name in config.models() for mode in config.permute_modes()]
    log(f"cnn: {len(train)} train / {len(val)} validation / {len(test)} test images, "
        f"{len(variants)} variant(s): {', '.join(_variant_name(*v) for v in variants)}")
    if any(mode != "none" for _, mode in variants):
        run.plot("permutations", permutation_figure(test, config.seed))

    if len(variants) == 1:
        config = with_recipe(dataclasses.replace(config, model_name=variants[0][0], permute=variants[0][1]))
        run.write_config(to_yaml(config))  # the resolved recipe, so that --resume and eval see it
        return train_variant(config, run, train, val, test, resume)

    if resume is not None:
        raise VislabError("a sweep cannot be resumed; run its unfinished variants one by one")
    results = []
    for index, (name, mode) in enumerate(variants, start=1):
        log(f"== variant {index}/{len(variants)}: {_variant_name(name, mode)}")
        variant_config = with_recipe(dataclasses.replace(config, model_name=name, permute=mode, sweep=""))
        variant_run = Run(run.path / "variants" / _variant_name(name, mode))
        variant_run.write_config(to_yaml(variant_config))
        summary = train_variant(variant_config, variant_run, train, val, test)
        variant_run.write_summary(summary)
        results.append((summary, variant_run.metrics()))
    return sweep_report(config, run, results)


def sweep_report(config: Config, run: Run, results: list[tuple[dict, list[dict]]]) -> dict:
    """One table, a grid of curves, accuracy against parameters and per-class accuracy."""
    table = []
    for summary, _ in results:
        report = REPORT_TEST_ACCURACY.get((summary["model_name"], summary["permute"]))
        table.append({"name": summary["model_name"], "permute": summary["permute"], "params": summary["params"],
                      "macs": summary["macs"], "best_val_accuracy": round(summary["best_val_accuracy"], 4),
                      "test_accuracy": round(summary["test_accuracy"], 4), "best_epoch": summary["best_epoch"],
                      "epochs": summary["epochs"], "seconds_per_epoch": summary["seconds_per_epoch"],
                      "report_test_accuracy": "" if report is None else report})
    run.table("sweep", table)
    classes = list(results[0][0]["per_class_accuracy"])
    labels = [_variant_name(s["model_name"], s["permute"]) for s, _ in results]
    run.table("per_class_test", [{"class": name, **{label: round(s["per_class_accuracy"][name], 4)
                                                    for label, (s, _) in zip(labels, results)}}
                                 for name in classes])
    run.plot("sweep_curves", curve_grid(labels, [rows for _, rows in results],
                                        [s["params"] for s, _ in results]))
    run.plot("accuracy_vs_params", accuracy_vs_params(labels, [s for s, _ in results]))
    if len(results) <= 8:
        run.plot("per_class_accuracy", grouped_bars(classes, labels, [s["per_class_accuracy"] for s, _ in results]))
    best = max(results, key=lambda item: item[0]["best_val_accuracy"])[0]
    return {"sweep": config.sweep or config.model_name, "permute": config.permute,
            "best_by_validation": _variant_name(best["model_name"], best["permute"]),
            "data": _data_note(config), "variants": [summary for summary, _ in results]}


def evaluate(config: Config, checkpoint: dict, run: Run) -> dict:
    from vislab.engine import load_model_state

    config = with_recipe(config)
    make_fabric(config)
    _, test = load_cifar(config)
    data_overview(run, {"test": (test.images, test.labels)}, test.classes, title=_data_note(config), seed=config.seed)
    test = permuted_set(test, config.permute, config.seed, TEST_STREAM)
    model = model_entry(config.model_name).build()
    load_model_state(model, checkpoint["model"], "the checkpoint")
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return {"model_name": config.model_name, "permute": config.permute, "params": count_parameters(model),
            "checkpoint_epoch": checkpoint.get("epoch"), **test_figures(model, test, run, config)}


# ---------------------------------------------------------------------------------------------
# figures


def permutation_figure(test: ImageSet, seed: int, count: int = 4) -> object:
    """Rows: test images; columns: the image, its fixed permutation, two per-image permutations."""
    picks = torch.stack([(test.labels == label).nonzero()[0, 0] for label in range(count)])
    images = test.images[picks]  # (count, 3, 32, 32)
    generator = epoch_generator(seed, 0, TRAIN_STREAM)
    columns = [images, permute(images, "fixed", seed, generator),
               permute(images, "per-image", seed, generator), permute(images, "per-image", seed, generator)]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # (count * 4, 3, 32, 32), row by row
    titles = [f"{test.classes[test.labels[i]]}: {what}" for i in picks.tolist()
              for what in ("original", "fixed", "per-image 1", "per-image 2")]
    return image_grid(grid, nrow=4, titles=titles, scale=1.6,
                      title="Pixel permutations (channels kept together)")


def curve_grid(labels: list[str], histories: list[list[dict]], params: list[int]) -> object:
    """One cell per variant: loss (left axis) and accuracy (right axis), train solid, val dashed;
    the same axes limits everywhere so that the cells compare at a glance."""
    import matplotlib.pyplot as plt

    columns = min(5, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.5 * rows), squeeze=False)
    top_loss = max(float(row[key]) for history in histories for row in history for key in ("train_loss", "val_loss"))
    for axis in axes.flat[len(labels):]:
        axis.axis("off")
    twins = []
    for axis, label, history, count in zip(axes.flat, labels, histories, params):
        epochs = [int(row["epoch"]) for row in history]
        accuracy = axis.twinx()
        twins.append(accuracy)
        axis.plot(epochs, [float(r["train_loss"]) for r in history], "-", color="tab:blue", label="train loss")
        axis.plot(epochs, [float(r["val_loss"]) for r in history], "--", color="tab:blue", label="val loss")
        accuracy.plot(epochs, [float(r["train_acc"]) for r in history], "-", color="tab:orange", label="train acc")
        accuracy.plot(epochs, [float(r["val_acc"]) for r in history], "--", color="tab:orange", label="val acc")
        axis.set_ylim(0, top_loss * 1.05)
        accuracy.set_ylim(0, 1)
        axis.set_title(f"{label} ({count:,} params)", fontsize=9)
        axis.tick_params(labelsize=7)
        accuracy.tick_params(labelsize=7, colors="tab:orange")
        axis.grid(alpha=0.3)
    first, first_twin = axes.flat[0], twins[0]
    figure.legend(handles=[*first.get_lines(), *first_twin.get_lines()], loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("Loss (blue, left) and accuracy (orange, right): train solid, validation dashed")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure


def accuracy_vs_params(labels: list[str], summaries: list[dict]) -> object:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    params = [s["params"] for s in summaries]
    axis.scatter(params, [s["best_val_accuracy"] for s in summaries], label="best validation accuracy", marker="o")
    axis.scatter(params, [s["test_accuracy"] for s in summaries], label="test accuracy", marker="x")
    for label, summary in zip(labels, summaries):
        axis.annotate(label, (summary["params"], summary["test_accuracy"]), fontsize=7,
                      xytext=(3, -8), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("trainable parameters (log scale)")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("Accuracy against parameter count")
    figure.tight_layout()
    return figure


def grouped_bars(classes: list[str], labels: list[str], per_class: list[dict[str, float]]) -> object:
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(max(7, 0.9 * len(classes) * max(1, len(labels) / 3)), 3.8))
    width = 0.8 / len(labels)
    positions = np.arange(len(classes))
    for index, (label, values) in enumerate(zip(labels, per_class)):
        axis.bar(positions + index * width, [values[name] for name in classes], width, label=label)
    axis.set_xticks(positions + 0.4 - width / 2, classes, rotation=45, ha="right")
    axis.set_ylabel("test accuracy")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, ncol=min(3, len(labels)))
    axis.set_title("Per-class test accuracy")
    figure.tight_layout()
    return figure


def _variant_name(model_name: str, mode: str) -> str:
    return model_name if mode == "none" else f"{model_name}-{mode}"


def _title(config: Config) -> str:
    return f"{_variant_name(config.model_name, config.permute)}{'' if config.data_root == BUILTIN else ' (CIFAR-10 JPEG copy)'}"


def _data_note(config: Config) -> str:
    if config.data_root == BUILTIN:
        return "builtin (generated patterns, not CIFAR-10)"
    return "cifar10-jpeg (a JPEG copy of CIFAR-10: figures sit slightly below those of the original pixels)"
