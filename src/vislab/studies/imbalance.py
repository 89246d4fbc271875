"""The imbalance study (APML Ex1): car / truck / cat with 88 % / 8 % / 4 % of the training set.

    vislab run imbalance --data-root ../shared/data                 # the best strategy found
    vislab run imbalance --config configs/imbalance/report.yaml     # the report's settings
    vislab run imbalance --compare                                  # every strategy, 3 seeds
    vislab run imbalance --lr-study                                 # curves per LR + range test
    vislab run imbalance --attack [--checkpoint PATH]               # adversarial examples
    vislab eval imbalance --checkpoint RUN_DIR --attack

Reads top to bottom: config, data (the split of vislab.data.apml, its manifest saved), the
strategies (data-level: augmentation, samplers, SMOTE; loss-level: class weights, logit
adjustment, balanced softmax, focal, LDAM-DRW, adversarial training; post-hoc: logit
adjustment tuned on dev), training, evaluation (dev and the balanced test set), the course's
checkpoint, the comparison, the LR study and the attacks. Figures on ../shared/data come
from a JPEG copy of CIFAR-10.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vislab import attacks
from vislab.analysis.metrics import classification_metrics
from vislab.analysis.plots import confusion_matrix_figure, data_overview, image_grid, plt
from vislab.config import CommonConfig, at_least, in_range, one_of, to_dict
from vislab.data import BUILTIN, ImageSet, resolve_data_root
from vislab.data.apml import CLASSES, DEV_COUNTS, TEST_PER_CLASS, TRAIN_COUNTS, imbalanced_split, load_course_pickle
from vislab.data.batches import Batches, random_flip, random_translate, to_float
from vislab.engine import (Sized, epoch_generator, load_model_state, log, make_fabric, make_optimizer, predict,
                           seed_epoch, train_one_epoch)
from vislab.errors import VislabError, did_you_mean
from vislab.models.imbalance import Normalized
from vislab.models.registry import count_parameters, model_entry
from vislab.runs import Run, load_checkpoint

STRATEGIES = (
    "none", "offline-aug", "online-aug", "oversample", "undersample", "balanced-sampler", "class-weights",
    "smote-pixels", "smote-features", "logit-adjust-loss", "logit-adjust-posthoc", "balanced-softmax",
    "focal", "ldam-drw", "adv-train",
)  # fmt: skip
SAMPLERS = ("oversample", "undersample", "balanced-sampler", "smote-pixels")  # at most one
LOSSES = ("logit-adjust-loss", "balanced-softmax", "ldam-drw")  # at most one (focal/class-weights combine)
BUILTIN_COUNTS = {"dev": (88, 8, 4), "train": (264, 24, 12), "test": 60}  # the same shares, small
COURSE_CHECKPOINT = "apml-ex1/pre_trained.ckpt"  # under the data root


@dataclass(frozen=True)
class AdvConfig:
    images: int = 300  # test images attacked (stratified, equal per class)
    eps: float = 8.0  # PGD / FGSM budget in grey levels (x/255), L-inf
    pgd_steps: int = 10  # PGD iterations
    pgd_step: float = 2.0  # PGD step size in grey levels (x/255)
    sweep: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])  # epsilons of the sweep, grey levels
    noise_steps: int = 300  # optimised-noise iterations (stops per image at success)
    noise_step: float = 1.0  # optimised-noise step: the largest pixel change per iteration, grey levels
    noise_l1: float = 0.1  # L1 weight C relative to the largest gradient entry (0..1): larger = sparser noise
    train_eps: float = 8.0  # adv-train: PGD budget during training, grey levels
    train_steps: int = 3  # adv-train: PGD iterations per training batch
    examples: int = 4  # rows of original / noise / adversarial in the figure

    def __post_init__(self) -> None:
        at_least("adv.images", self.images, 3)
        at_least("adv.eps", self.eps, 0.0)
        at_least("adv.pgd_steps", self.pgd_steps, 1)
        at_least("adv.noise_steps", self.noise_steps, 1)
        in_range("adv.noise_l1", self.noise_l1, 0.0, 0.99)
        at_least("adv.train_steps", self.train_steps, 1)


@dataclass(frozen=True)
class Config(CommonConfig):
    epochs: int = 30  # training epochs (10 left the default net under-trained: dev macro-F1 0.65 vs 0.92 at 30 on the real data)
    batch_size: int = 64  # images per step
    model_name: str = "imb_resnet"  # a registered imbalance model (`vislab models --study imbalance`)
    strategies: str = "online-aug+balanced-softmax+logit-adjust-posthoc"  # '+'-joined: see STRATEGIES
    optimizer: str = "sgd"  # 'sgd' (Nesterov when momentum > 0) or 'adamw'
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty (decoupled for adamw)
    schedule: str = "onecycle"  # 'onecycle', 'cosine' or 'constant'
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    translate: int = 3  # augmentation: largest shift in pixels (with a random left-right flip)
    aug_copies: int = 2  # offline-aug: transformed copies added per training image
    tta: bool = True  # evaluation averages the logits of the image and its mirror
    la_tau: float = 1.5  # logit-adjust-loss temperature tau (tau = 1 is balanced-softmax)
    posthoc_objective: str = "macro_f1"  # logit-adjust-posthoc: tau maximises this on dev ('macro_f1' or 'balanced_accuracy')
    focal_gamma: float = 2.0  # focal loss focusing parameter
    ldam_margin: float = 1.0  # LDAM: the rarest class's margin in logits (others scale as n^-1/4)
    drw_start: float = 0.6  # LDAM-DRW: share of the epochs before class-balanced re-weighting starts
    smote_k: int = 5  # SMOTE neighbours
    head_epochs: int = 100  # smote-features: full-batch Adam steps retraining the last layer
    split_seed: int = 0  # seeds the choice of dev/train/test images (keep 0 to compare runs)
    train_pickle: str = ""  # the course's train.pickle (list of (3x32x32 tensor, label)); '' = build from CIFAR-10
    dev_pickle: str = ""  # the course's dev.pickle; used with train_pickle
    checkpoint: str = ""  # a checkpoint to evaluate/attack instead of training (vislab .ckpt, run folder, or the course's)
    compare: bool = False  # train every strategy in compare_strategies, compare_seeds seeds each
    compare_strategies: list[str] = field(default_factory=lambda: ["all"])  # strategy specs to compare ('all' = every single one + the default)
    compare_seeds: int = 3  # seeds per strategy in --compare
    lr_study: bool = False  # training curves for lr_values and an LR range test
    lr_values: list[float] = field(default_factory=lambda: [1e-10, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1])  # learning rates of the LR study (constant, SGD)
    lr_study_epochs: int = 5  # epochs per learning rate in the LR study
    attack: bool = False  # attack the model (trained, or --checkpoint) with FGSM, PGD and optimised noise
    adv: AdvConfig = field(default_factory=AdvConfig)  # adversarial examples and adversarial training

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.devices > 1 or self.num_nodes > 1:  # fail before any process starts
            raise VislabError("imbalance runs on one process only (devices=1, num_nodes=1): its own training loop "
                              "(resampling, SMOTE, class weights, many models per comparison) does not go through "
                              "the distributed engine; runs take minutes, so run several seeds side by side instead")
        entry = model_entry(self.model_name)
        if entry.study != "imbalance":
            raise VislabError(f"config key 'model_name': {self.model_name!r} is a {entry.study} model; "
                              "use an imbalance model (`vislab models --study imbalance`)")
        parse_strategies(self.strategies)
        for spec in self.compare_strategies:
            if spec != "all":
                parse_strategies(spec)
        one_of("optimizer", self.optimizer, ("sgd", "adamw"))
        one_of("schedule", self.schedule, ("onecycle", "cosine", "constant"))
        one_of("posthoc_objective", self.posthoc_objective, ("macro_f1", "balanced_accuracy"))
        in_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        in_range("drw_start", self.drw_start, 0.0, 1.0)
        at_least("lr", self.lr, 0.0)
        at_least("translate", self.translate, 0)
        at_least("aug_copies", self.aug_copies, 1)
        at_least("smote_k", self.smote_k, 1)
        at_least("compare_seeds", self.compare_seeds, 1)
        at_least("lr_study_epochs", self.lr_study_epochs, 1)
        if bool(self.train_pickle) != bool(self.dev_pickle):
            raise VislabError("config keys 'train_pickle' and 'dev_pickle' go together; give both or neither")


DEMO = {"data_root": BUILTIN, "epochs": 4, "batch_size": 32, "attack": True, "adv.images": 15,
        "adv.noise_steps": 30, "adv.pgd_steps": 5, "adv.sweep": "[0,8,32]", "adv.examples": 2}


def run_name(config: Config) -> str:
    mode = ("compare" if config.compare else "lr-study" if config.lr_study else
            "checkpoint" if config.checkpoint else config.strategies)
    return f"{mode}-attack" if config.attack else mode


def parse_strategies(spec: str) -> tuple[str, ...]:
    """'online-aug+focal' -> ('online-aug', 'focal'); checks names and combinations."""
    names = tuple(part.strip() for part in spec.split("+") if part.strip())
    for name in names:
        if name not in STRATEGIES:
            raise VislabError(f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)} "
                              f"(strategies: {', '.join(STRATEGIES)}; combine with '+')")
    if not names:
        raise VislabError("config key 'strategies' is empty; use 'none' for plain training")
    for group in (SAMPLERS, LOSSES):
        clash = [name for name in names if name in group]
        if len(clash) > 1:
            raise VislabError(f"strategies {' and '.join(clash)} cannot be combined: choose one of them")
    if "none" in names and len(names) > 1:
        raise VislabError("strategy 'none' cannot be combined with others")
    return names


# ---------------------------------------------------------------------------------------------
# data


def load_data(config: Config) -> tuple[dict[str, ImageSet], dict]:
    """{'train', 'dev', 'test'} (labels 0 car, 1 truck, 2 cat) and the manifest of the split.
    With train_pickle/dev_pickle, train and dev come from the course's pickles instead."""
    root = resolve_data_root(config.data_root)
    if root == BUILTIN:
        from vislab.data.builtin import tiny_cifar

        sets, indices = imbalanced_split(
            tiny_cifar("train", n_per_class=max(BUILTIN_COUNTS["dev"]) + max(BUILTIN_COUNTS["train"])),
            tiny_cifar("test", n_per_class=BUILTIN_COUNTS["test"]), dev_counts=BUILTIN_COUNTS["dev"],
            train_counts=BUILTIN_COUNTS["train"], test_per_class=BUILTIN_COUNTS["test"], seed=config.split_seed)
        manifest = {"source": "builtin tiny_cifar (automobile/truck/cat)", "indices": indices}
    else:
        from vislab.data.apml import manifest_names
        from vislab.data.cifar import load_cifar10

        test_pool = load_cifar10(root, "test")
        train_pool = load_cifar10(root, "train")
        sets, indices = imbalanced_split(train_pool, test_pool, seed=config.split_seed)
        manifest = {"source": f"{root}/cifar10-jpeg", "split_seed": config.split_seed,
                    "counts": {"dev": DEV_COUNTS, "train": TRAIN_COUNTS, "test": [TEST_PER_CLASS] * 3},
                    "files": manifest_names(indices, train_pool, test_pool)}
    if config.train_pickle:
        sets["train"], sets["dev"] = load_course_pickle(config.train_pickle), load_course_pickle(config.dev_pickle)
        manifest = {"source": f"course pickles ({config.train_pickle}, {config.dev_pickle}); test: {manifest['source']}",
                    "test": manifest}
    return sets, manifest


def augment(x: torch.Tensor, config: Config, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, 32, 32) uint8 -> the same, flipped left-right and shifted per image."""
    return random_translate(random_flip(x, generator), config.translate, generator, mode="reflect")


def resample(config: Config, names: tuple[str, ...], train: ImageSet, seed: int) -> ImageSet:
    """The data-level strategies applied once before training (offline augmentation, random
    over/under-sampling, SMOTE on pixels); imbalanced-learn does the sampling."""
    images, labels = train.images, train.labels
    if "offline-aug" in names:
        generator = torch.Generator().manual_seed(seed + 7919)
        copies = [augment(images, config, generator) for _ in range(config.aug_copies)]
        images, labels = torch.cat([images, *copies]), labels.repeat(1 + config.aug_copies)
    if "oversample" in names or "undersample" in names:
        from imblearn.under_sampling import RandomUnderSampler
        from imblearn.over_sampling import RandomOverSampler

        sampler = (RandomOverSampler if "oversample" in names else RandomUnderSampler)(random_state=seed)
        index, _ = sampler.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels.numpy())
        index = torch.from_numpy(index.ravel())
        images, labels = images[index], labels[index]
    if "smote-pixels" in names:
        from imblearn.over_sampling import SMOTE

        flat, new_labels = SMOTE(k_neighbors=config.smote_k, random_state=seed).fit_resample(
            images.flatten(1).numpy().astype(np.float32), labels.numpy())
        images = torch.from_numpy(flat).round().clamp(0, 255).to(torch.uint8).view(-1, *images.shape[1:])
        labels = torch.from_numpy(new_labels).long()
    return ImageSet(images.contiguous(), labels, train.classes)


# ---------------------------------------------------------------------------------------------
# losses


def class_counts(labels: torch.Tensor) -> torch.Tensor:
    return torch.bincount(labels, minlength=len(CLASSES)).float().clamp_min(1)


def make_loss(config: Config, names: tuple[str, ...], counts: torch.Tensor):
    """loss(logits, y, epoch) for the loss-level strategies; counts are the training set's."""
    log_prior = (counts / counts.sum()).log()
    weights = counts.sum() / (len(counts) * counts) if "class-weights" in names else None
    margins = config.ldam_margin * (counts.min() / counts) ** 0.25  # LDAM: Delta_c ~ n_c^-1/4
    beta = 0.9999  # DRW's effective-number weights (Cao et al. 2019)
    drw_weights = (1 - beta) / (1 - beta ** counts)
    drw_weights = drw_weights / drw_weights.sum() * len(counts)
    drw_epoch = math.ceil(config.drw_start * config.epochs)

    def loss(logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        weight = weights
        if "balanced-softmax" in names:
            logits = logits + log_prior
        elif "logit-adjust-loss" in names:
            logits = logits + config.la_tau * log_prior
        elif "ldam-drw" in names:
            logits = logits - margins[y].unsqueeze(1) * F.one_hot(y, len(counts))
            weight = drw_weights if epoch > drw_epoch else weights
        if "focal" in names:
            log_p = F.log_softmax(logits, 1).gather(1, y.unsqueeze(1)).squeeze(1)  # (B,)
            per_sample = -((1 - log_p.exp()) ** config.focal_gamma) * log_p
            if weight is not None:
                return (per_sample * weight[y]).sum() / weight[y].sum()
            return per_sample.mean()
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=config.label_smoothing)

    return loss


# ---------------------------------------------------------------------------------------------
# training


def build_model(model_name: str) -> Normalized:
    """The registered net inside the input normalisation; inputs are images in [0, 1].
    The course's model was trained on [-1, 1] (mean 0.5, std 0.5); ours use the same."""
    return Normalized(model_entry(model_name).build(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass
class Trained:
    model: Normalized  # eval mode, its logit_bias set (post-hoc adjustment)
    logit_bias: torch.Tensor  # (3,) added to the logits at prediction
    rows: list[dict]  # one per epoch
    seconds: float
    posthoc_tau: float | None = None


def train(config: Config, data: dict[str, ImageSet], seed: int, fabric, *, strategies: str | None = None,
          on_epoch=None) -> Trained:
    """Train config.model_name with `strategies` (default config.strategies) from `seed`."""
    names = parse_strategies(strategies or config.strategies)
    torch.manual_seed(seed)
    started = time.perf_counter()
    train_set = resample(config, names, data["train"], seed)
    counts = class_counts(data["train"].labels)  # the true prior, before any resampling
    loss_fn = make_loss(config, names, class_counts(train_set.labels) if any(
        n in names for n in SAMPLERS) else counts)
    model = build_model(config.model_name).to(memory_format=torch.channels_last)  # ~30 % faster convs on CPU
    steps_per_epoch = max(len(train_set) // config.batch_size, 1)
    optimizer, scheduler = make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr, momentum=config.momentum,
                                          weight_decay=config.weight_decay, schedule=config.schedule,
                                          total_steps=config.epochs * steps_per_epoch)
    model, optimizer = fabric.setup(model, optimizer)
    sample_weights = (1 / counts)[train_set.labels]  # balanced-sampler: each class equally likely

    def batches(epoch: int):
        generator = epoch_generator(seed, epoch)
        images, labels = train_set.images, train_set.labels
        if "balanced-sampler" in names:
            index = torch.multinomial(sample_weights, len(labels), replacement=True, generator=generator)
            images, labels = images[index], labels[index]
        batch_iter = Batches(images, labels, config.batch_size, shuffle=True, seed=seed, epoch=epoch,
                             drop_last=len(labels) >= config.batch_size)
        for x, y in batch_iter:
            if "online-aug" in names:
                x = augment(x, config, generator)
            yield to_float(x).to(fabric.device, memory_format=torch.channels_last), y.to(fabric.device)

    rows = []
    for epoch in range(1, config.epochs + 1):
        seed_epoch(seed, epoch)
        epoch_started = time.perf_counter()

        def step(net, batch):
            x, y = batch
            if "adv-train" in names:
                x = attacks.pgd(net, x, y, config.adv.train_eps / 255, steps=config.adv.train_steps,
                                generator=epoch_generator(seed, epoch, 1))
            logits = net(x)
            return loss_fn(logits, y, epoch), {"acc": (logits.argmax(1) == y).float().mean().item()}

        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row |= train_one_epoch(fabric, model, optimizer, Sized(batches(epoch), steps_per_epoch), step,
                               scheduler=scheduler, description=f"epoch {epoch}/{config.epochs}")
        model.eval()
        dev = evaluate_logits(model, data["dev"], config.tta)
        row |= {"dev_loss": F.cross_entropy(dev, data["dev"].labels).item(),
                "dev_macro_f1": classification_metrics(data["dev"].labels, dev.argmax(1), CLASSES)["macro_f1"],
                "seconds": round(time.perf_counter() - epoch_started, 2)}
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
    from vislab.engine import unwrap

    net = unwrap(model).to(memory_format=torch.contiguous_format)
    net.eval()
    if "smote-features" in names:
        retrain_head_on_smote_features(config, net, train_set, seed)
    bias, tau = torch.zeros(len(CLASSES)), None
    if "logit-adjust-posthoc" in names:
        tau, bias = tune_posthoc(config, net, data["dev"], counts)
    net.logit_bias.copy_(bias)
    return Trained(net, bias, rows, time.perf_counter() - started, tau)


def features_of(model: Normalized, images: torch.Tensor) -> torch.Tensor:
    return predict(model, Batches(images, images[:, 0, 0, 0], 500, shuffle=False),
                   lambda net, batch: net.features(to_float(batch[0])))


def smote_features(features: np.ndarray, labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """imbalanced-learn's SMOTE in feature space: every class up to the majority's count."""
    from imblearn.over_sampling import SMOTE

    return SMOTE(k_neighbors=k, random_state=seed).fit_resample(features, labels)


def retrain_head_on_smote_features(config: Config, model: Normalized, train: ImageSet, seed: int) -> None:
    """SMOTE on learned features: balance the penultimate features of the training set with
    SMOTE, then refit the last linear layer on them (the body stays as trained)."""
    features = features_of(model, train.images)
    balanced, labels = smote_features(features.numpy(), train.labels.numpy(), config.smote_k, seed)
    x, y = torch.from_numpy(balanced).float(), torch.from_numpy(labels).long()
    head = model.net.head
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(config.head_epochs):
            loss = F.cross_entropy(head(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def tune_posthoc(config: Config, model: Normalized, dev: ImageSet, counts: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Logit adjustment after training: logits - tau * log prior, tau in -1..2 chosen on dev
    (never on test) by config.posthoc_objective; of equal scores, the smallest |tau| wins."""
    logits = evaluate_logits(model, dev, config.tta)
    log_prior = (counts / counts.sum()).log()
    best_tau, best_score = 0.0, -1.0
    for tau in sorted(np.arange(-1.0, 2.01, 0.125), key=abs):
        figures = classification_metrics(dev.labels, (logits - tau * log_prior).argmax(1), CLASSES)
        if figures[config.posthoc_objective] > best_score + 1e-9:
            best_tau, best_score = float(tau), figures[config.posthoc_objective]
    return best_tau, -best_tau * log_prior


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate_logits(model: nn.Module, images: ImageSet, tta: bool) -> torch.Tensor:
    """(N, 3) logits of a set; with tta, the mean of the image's and its mirror's."""
    def forward(net, batch):
        x = to_float(batch[0])
        out = net(x)
        return (out + net(x.flip(-1))) / 2 if tta else out

    return predict(model, Batches(images.images, images.labels, 500, shuffle=False), forward)


def split_figures(model: nn.Module, images: ImageSet, split: str, run: Run | None, *, tta: bool,
                  prefix: str = "") -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/accuracy, macro and weighted
    averages and the confusion matrix of one split; with a run, its table and plot."""
    figures = classification_metrics(images.labels, evaluate_logits(model, images, tta).argmax(1), CLASSES)
    if run is not None:
        run.table(f"{prefix}per_class_{split}", [
            {"class": name, **{key: f"{value:.4f}" if isinstance(value, float) else value for key, value in stats.items()}}
            for name, stats in figures["per_class"].items()] + [
            {"class": "macro avg", "precision": f"{figures['macro_precision']:.4f}",
             "recall": f"{figures['macro_recall']:.4f}", "f1": f"{figures['macro_f1']:.4f}", "support": len(images)},
            {"class": "weighted avg", "precision": f"{figures['weighted_precision']:.4f}",
             "recall": f"{figures['weighted_recall']:.4f}", "f1": f"{figures['weighted_f1']:.4f}", "support": len(images)}])
        run.plot(f"{prefix}confusion_{split}", confusion_matrix_figure(
            figures["confusion_matrix"], CLASSES, f"{prefix}{split} ({len(images)} images)"))
    return figures


def summary_figures(model: nn.Module, data: dict[str, ImageSet], run: Run | None, *, tta: bool,
                    prefix: str = "") -> dict:
    """The summary keys of a model on dev and test."""
    out: dict = {"per_class": {}}
    for split in ("dev", "test"):
        figures = split_figures(model, data[split], split, run, tta=tta, prefix=prefix)
        out |= {f"{split}_accuracy": figures["accuracy"], f"{split}_macro_f1": figures["macro_f1"],
                f"{split}_weighted_f1": figures["weighted_f1"],
                f"{split}_balanced_accuracy": figures["balanced_accuracy"],
                f"{split}_confusion_matrix": figures["confusion_matrix"]}
        out["per_class"][split] = {name: {key: stats[key] for key in ("precision", "recall", "f1", "accuracy")}
                                   for name, stats in figures["per_class"].items()}
    return out


def course_model(root) -> tuple[Normalized, str] | None:
    """The course's baseline checkpoint in its architecture, or None when it is absent."""
    if root == BUILTIN:
        return None
    path = Path(root) / COURSE_CHECKPOINT
    if not path.is_file():
        return None
    return load_any_checkpoint(str(path))[0], str(path)


def load_any_checkpoint(path: str) -> tuple[Normalized, torch.Tensor, dict]:
    """(model in eval mode, logit bias, the checkpoint's config or {}) from a vislab
    checkpoint, a run folder, or the course's pre_trained.ckpt ({'model_state_dict': ...})."""
    checkpoint = load_checkpoint(path)
    if "model_state_dict" in checkpoint:  # the course's format: SimpleModel, inputs in [-1, 1]
        model = build_model("apml_simple")
        load_model_state(model.net, checkpoint["model_state_dict"], f"checkpoint {path}")
        return model.eval(), torch.zeros(len(CLASSES)), {}
    if "model" not in checkpoint or not isinstance(checkpoint.get("config"), dict):
        raise VislabError(f"checkpoint {path} is neither a vislab imbalance checkpoint nor the course's "
                          "pre_trained.ckpt (no 'model' and 'config', no 'model_state_dict')")
    name = checkpoint["config"].get("model_name", "imb_resnet")
    model = build_model(name)
    load_model_state(model.net, checkpoint["model"], f"checkpoint {path} ({name})")
    bias = torch.as_tensor(checkpoint.get("logit_bias", torch.zeros(len(CLASSES)))).float()
    model.logit_bias.copy_(bias)
    return model.eval(), bias, checkpoint["config"]


# ---------------------------------------------------------------------------------------------
# the study


def run(config: Config, run: Run, resume: dict | None = None) -> dict:
    if resume is not None:
        raise VislabError("imbalance runs are minutes long and are not resumed; start a new run")
    fabric = make_fabric(config)
    data, manifest = load_data(config)
    run.write_json("manifest.json", manifest)
    data_overview(run, {split: (images.images, images.labels) for split, images in data.items()}, CLASSES,
                  title="imbalance", seed=config.seed)
    log(f"imbalance: train {class_counts(data['train'].labels).int().tolist()} / dev "
        f"{class_counts(data['dev'].labels).int().tolist()} / test {class_counts(data['test'].labels).int().tolist()} "
        f"(car/truck/cat)")
    root = resolve_data_root(config.data_root)
    baseline = course_model(root)  # read now: a damaged file must not cost a training run first
    if config.compare:
        return compare(config, run, data, fabric)
    if config.lr_study:
        return lr_study(config, run, data, fabric)
    if config.checkpoint:
        model, bias, _ = load_any_checkpoint(config.checkpoint)
        summary = {"strategy": f"checkpoint {config.checkpoint}", "model_name": type(model.net).__name__,
                   **summary_figures(model, data, run, tta=config.tta)}
    else:
        trained = train(config, data, config.seed, fabric, on_epoch=lambda row: (run.append_metrics(row), log(
            f"epoch {row['epoch']}/{config.epochs}  train_loss {row['train_loss']:.4f}  dev_macro_f1 "
            f"{row['dev_macro_f1']:.4f}  {row['seconds']:.1f} s")))
        model, bias = trained.model, trained.logit_bias
        run.save_checkpoint("best.ckpt", {"model": model.net.state_dict(), "config": to_dict(config),
                                          "logit_bias": bias, "epoch": config.epochs,
                                          "posthoc_tau": trained.posthoc_tau})
        run.plot("curves", curves_figure(trained.rows, config.strategies))
        summary = {"strategy": config.strategies, "model_name": config.model_name,
                   "params": count_parameters(model.net), "train_seconds": round(trained.seconds, 1),
                   "posthoc_tau": trained.posthoc_tau,
                   **summary_figures(model, data, run, tta=config.tta)}
        if trained.posthoc_tau is not None:  # both: the rule chosen on dev, and no adjustment
            model.logit_bias.zero_()
            raw = summary_figures(model, data, None, tta=config.tta)
            model.logit_bias.copy_(bias)
            summary["before_posthoc"] = {k: raw[k] for k in ("dev_accuracy", "dev_macro_f1", "dev_balanced_accuracy",
                                                             "test_accuracy", "test_macro_f1",
                                                             "test_balanced_accuracy")}
    summary["data"] = manifest["source"]
    if baseline is not None:
        summary["course_baseline"] = {key: value for key, value in summary_figures(
            baseline[0], data, run, tta=False, prefix="course_").items()}
    if config.attack:
        summary |= attack_study(config, run, model, data, baseline[0] if baseline else None)
    return summary


def evaluate(config: Config, checkpoint: dict, run: Run) -> dict:
    """Figures (and with --attack, the attacks) of a vislab checkpoint on dev and test."""
    make_fabric(config)
    data, manifest = load_data(config)
    run.write_json("manifest.json", manifest)
    data_overview(run, {split: (images.images, images.labels) for split, images in data.items()}, CLASSES,
                  title="imbalance", seed=config.seed)
    model = build_model(config.model_name)
    load_model_state(model.net, checkpoint["model"], "the checkpoint")
    model.eval()
    model.logit_bias.copy_(torch.as_tensor(checkpoint.get("logit_bias", torch.zeros(len(CLASSES)))).float())
    summary = {"strategy": config.strategies, "model_name": config.model_name, "data": manifest["source"],
               **summary_figures(model, data, run, tta=config.tta)}
    if config.attack:
        baseline = course_model(resolve_data_root(config.data_root))
        summary |= attack_study(config, run, model, data, baseline[0] if baseline else None)
    return summary


def curves_figure(rows: list[dict], title: str):
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = [row["epoch"] for row in rows]
    axes[0].plot(epochs, [row["train_loss"] for row in rows], marker="o", label="train loss")
    axes[0].plot(epochs, [row["dev_loss"] for row in rows], marker="o", label="dev loss (CE)")
    axes[1].plot(epochs, [row["dev_macro_f1"] for row in rows], marker="o", label="dev macro-F1")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# --compare: every strategy, several seeds


def compare_specs(config: Config) -> list[str]:
    """'all' = every single strategy, then this config's and the default's combinations."""
    specs = []
    for spec in config.compare_strategies:
        specs += [*STRATEGIES, config.strategies, Config.strategies] if spec == "all" else [spec]
    return list(dict.fromkeys(specs))  # no repeats, order kept


def compare(config: Config, run: Run, data: dict[str, ImageSet], fabric) -> dict:
    """Train every strategy spec `compare_seeds` times; one table (mean +- std) and bars."""
    keys = ["dev_macro_f1", "dev_balanced_accuracy", "dev_accuracy", "test_macro_f1", "test_balanced_accuracy",
            "test_accuracy"] + [f"{split}_recall_{name}" for split in ("dev", "test") for name in CLASSES]
    per_run, table, results = [], [], {}
    specs = compare_specs(config)
    for number, spec in enumerate(specs, start=1):
        values: dict[str, list[float]] = {key: [] for key in keys + ["minutes"]}
        for seed in range(config.seed, config.seed + config.compare_seeds):
            trained = train(config, data, seed, fabric, strategies=spec)
            figures = summary_figures(trained.model, data, None, tta=config.tta)
            for split in ("dev", "test"):
                for name in CLASSES:
                    figures[f"{split}_recall_{name}"] = figures["per_class"][split][name]["recall"]
            row = {"strategy": spec, "seed": seed, "minutes": trained.seconds / 60,
                   **{key: figures[key] for key in keys}}
            per_run.append(row)
            for key in keys + ["minutes"]:
                values[key].append(row[key])
            log(f"compare [{number}/{len(specs)}] {spec} seed {seed}: dev macro-F1 {row['dev_macro_f1']:.3f}  "
                f"test balanced acc {row['test_balanced_accuracy']:.3f}  {row['minutes']:.1f} min")
            run.table("compare_runs", per_run)  # written as it goes: a long comparison shows progress
        mean = {key: float(np.mean(v)) for key, v in values.items()}
        std = {key: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for key, v in values.items()}
        results[spec] = {"mean": mean, "std": std, "seeds": config.compare_seeds}
        table.append({"strategy": spec, "seeds": config.compare_seeds,
                      **{key: f"{mean[key]:.3f} +- {std[key]:.3f}" for key in keys},
                      "minutes": f"{mean['minutes']:.2f}"})
        run.table("comparison", table)
    run.plot("comparison", comparison_figure(results))
    best = max(results, key=lambda spec: results[spec]["mean"]["dev_macro_f1"])
    return {"strategy": "compare", "model_name": config.model_name, "epochs": config.epochs,
            "seeds": config.compare_seeds, "best_by_dev_macro_f1": best,
            "comparison": {spec: {"mean": r["mean"], "std": r["std"]} for spec, r in results.items()}}


def comparison_figure(results: dict):
    names = list(results)
    keys = [("dev_macro_f1", "dev macro-F1"), ("test_macro_f1", "test macro-F1"),
            ("test_balanced_accuracy", "test balanced accuracy")]
    figure, axis = plt.subplots(figsize=(max(7, 0.75 * len(names) + 3), 4))
    width = 0.8 / len(keys)
    for offset, (key, label) in enumerate(keys):
        axis.bar(np.arange(len(names)) + (offset - 1) * width, [results[n]["mean"][key] for n in names], width,
                 yerr=[results[n]["std"][key] for n in names], capsize=2, label=label)
    axis.set_xticks(np.arange(len(names)), names, rotation=40, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"strategies (mean +- std over {next(iter(results.values()))['seeds']} seeds)")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# --lr-study: constant learning rates side by side, and an LR range test


def lr_study(config: Config, run: Run, data: dict[str, ImageSet], fabric) -> dict:
    study = Config(**{**vars(config), "schedule": "constant", "epochs": config.lr_study_epochs, "weight_decay": 0.0})
    curves = {}
    for lr in config.lr_values:
        trained = train(Config(**{**vars(study), "lr": lr}), data, config.seed, fabric)
        curves[lr] = trained.rows
        log(f"lr study: lr {lr:g}: train loss {trained.rows[0]['train_loss']:.3f} -> {trained.rows[-1]['train_loss']:.3f}"
            f"  dev macro-F1 {trained.rows[-1]['dev_macro_f1']:.3f}")
    run.table("lr_study", [{"lr": lr, **row} for lr, rows in curves.items() for row in rows])
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for lr, rows in curves.items():
        epochs = [row["epoch"] for row in rows]
        axes[0].plot(epochs, [row["train_loss"] for row in rows], marker="o", label=f"lr {lr:g}")
        axes[1].plot(epochs, [row["dev_macro_f1"] for row in rows], marker="o", label=f"lr {lr:g}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("train loss")
    axes[1].set_ylabel("dev macro-F1")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"{config.model_name}, {config.strategies}, constant LR (SGD momentum {config.momentum})")
    figure.tight_layout()
    run.plot("lr_curves", figure)
    lrs, losses, suggested = lr_range_test(config, data, fabric)
    run.table("lr_range_test", [{"lr": lr, "smoothed_loss": loss} for lr, loss in zip(lrs, losses)])
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(lrs, losses)
    axis.axvline(suggested, color="red", linestyle="--", label=f"suggested {suggested:.2g}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed training loss")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    run.plot("lr_range_test", figure)
    final = {f"{lr:g}": {"final_train_loss": rows[-1]["train_loss"], "final_dev_macro_f1": rows[-1]["dev_macro_f1"]}
             for lr, rows in curves.items()}
    return {"strategy": config.strategies, "model_name": config.model_name, "lr_study": final,
            "suggested_lr": suggested}


def lr_range_test(config: Config, data: dict[str, ImageSet], fabric, *, start: float = 1e-7, end: float = 10.0,
                  steps: int = 120) -> tuple[list[float], list[float], float]:
    """Smith's range test: one pass with the LR growing exponentially from start to end; the
    suggestion is the LR of the steepest fall of the smoothed loss (stops once it explodes)."""
    names = parse_strategies(config.strategies)
    torch.manual_seed(config.seed)
    model = build_model(config.model_name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=start, momentum=config.momentum)
    loss_fn = make_loss(config, names, class_counts(data["train"].labels))
    generator = epoch_generator(config.seed, 0, 3)
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    train_set = data["train"]
    for step in range(steps):
        lr = start * (end / start) ** (step / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(len(train_set), (config.batch_size,), generator=generator)
        x = to_float(augment(train_set.images[index], config, generator))
        loss = loss_fn(model(x), train_set.labels[index], 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        smooth = 0.9 * smooth + 0.1 * loss.item()
        value = smooth / (1 - 0.9 ** (step + 1))  # bias-corrected running mean
        if not math.isfinite(value) or value > 4 * best:
            break
        best = min(best, value)
        lrs.append(lr)
        losses.append(value)
    slopes = np.gradient(np.array(losses), np.log(np.array(lrs))) if len(lrs) > 2 else np.zeros(len(lrs))
    suggested = float(lrs[int(np.argmin(slopes[: max(int(np.argmin(losses)), 1)]))]) if lrs else config.lr
    return lrs, losses, suggested


# ---------------------------------------------------------------------------------------------
# --attack: FGSM, PGD, optimised noise, epsilon sweep


def attack_images(config: Config, test: ImageSet) -> ImageSet:
    """adv.images test images, the same number per class, chosen by a fixed seed."""
    per_class = config.adv.images // len(CLASSES)
    generator = torch.Generator().manual_seed(1234)
    index = []
    for label in range(len(CLASSES)):
        pool = torch.nonzero(test.labels == label).flatten()
        index.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]].sort().values)
    return test.subset(torch.cat(index))


def accuracy_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, eps_levels: list[float],
                   config: Config) -> dict[str, float]:
    """{eps in grey levels: accuracy} under untargeted FGSM or PGD."""
    out = {}
    for level in eps_levels:
        eps = level / 255
        if eps == 0:
            x_adv = x
        elif method == "fgsm":
            x_adv = attacks.fgsm(model, x, y, eps)
        else:
            x_adv = attacks.pgd(model, x, y, eps, alpha=max(eps / 4, config.adv.pgd_step / 255 if level >= 8 else eps / 4),
                                steps=config.adv.pgd_steps, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out[f"{level:g}"] = float((model(x_adv).argmax(1) == y).float().mean())
    return out


def targeted_pairs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every image with every other class as target: (x repeated, source, target)."""
    xs, sources, targets = [], [], []
    for shift in range(1, len(CLASSES)):
        xs.append(x)
        sources.append(y)
        targets.append((y + shift) % len(CLASSES))
    return torch.cat(xs), torch.cat(sources), torch.cat(targets)


def attack_study(config: Config, run: Run, model: nn.Module, data: dict[str, ImageSet], baseline: nn.Module | None) -> dict:
    adv = config.adv
    subset = attack_images(config, data["test"])
    x, y = to_float(subset.images), subset.labels
    started = time.perf_counter()
    xs, sources, targets = targeted_pairs(x, y)
    x_pgd = attacks.pgd(model, xs, targets, adv.eps / 255, alpha=adv.pgd_step / 255, steps=adv.pgd_steps,
                        targeted=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pgd_hit = model(x_pgd).argmax(1) == targets
    log(f"attack: targeted PGD eps {adv.eps:g}/255 succeeds on {pgd_hit.float().mean():.1%} of "
        f"{len(targets)} (image, target) pairs")
    noise = attacks.optimized_noise(model, xs, targets, l1_weight=adv.noise_l1, step_size=adv.noise_step / 255,
                                    steps=adv.noise_steps)
    delta = noise.x_adv - xs
    linf = delta.flatten(1).abs().amax(1)
    l2 = delta.flatten(1).norm(dim=1)
    zero_share = (delta.abs() < 0.5 / 255).float().flatten(1).mean(1)
    log(f"attack: optimised noise succeeds on {noise.success.float().mean():.1%}; successful noise: mean L-inf "
        f"{_mean(linf[noise.success]) * 255:.1f}/255, mean L2 {_mean(l2[noise.success]):.3f}; "
        f"{zero_share.mean():.0%} of pixels unchanged")
    pairs = []
    pgd_table = attacks.success_by_pair(sources, targets, pgd_hit, len(CLASSES))
    noise_table = attacks.success_by_pair(sources, targets, noise.success, len(CLASSES))
    for s in range(len(CLASSES)):
        for t in range(len(CLASSES)):
            if s != t:
                chosen = (sources == s) & (targets == t)
                pairs.append({"source": CLASSES[s], "target": CLASSES[t], "pairs": int(chosen.sum()),
                              "pgd_success": float(pgd_table[s, t]), "noise_success": float(noise_table[s, t]),
                              "noise_mean_linf_255": float(linf[chosen].mean() * 255),
                              "noise_mean_l2": float(l2[chosen].mean())})
    run.table("attack_pairs", pairs)
    sweep = {"fgsm": accuracy_under(model, x, y, "fgsm", adv.sweep, config),
             "pgd": accuracy_under(model, x, y, "pgd", adv.sweep, config)}
    curves = {"model": sweep}
    if baseline is not None:
        curves["course checkpoint"] = {"fgsm": accuracy_under(baseline, x, y, "fgsm", adv.sweep, config),
                                       "pgd": accuracy_under(baseline, x, y, "pgd", adv.sweep, config)}
    run.table("epsilon_sweep", [{"model": name, "attack": method, "eps_255": eps, "accuracy": acc}
                                for name, methods in curves.items() for method, accs in methods.items()
                                for eps, acc in accs.items()])
    run.plot("epsilon_sweep", sweep_figure(curves, len(y)))
    run.plot("adversarial_examples", examples_figure(model, xs, noise.x_adv, sources, targets, adv.examples))
    summary = {"attack_images": len(y), "attack_seconds": round(time.perf_counter() - started, 1),
               "pgd_targeted_success": float(pgd_hit.float().mean()),
               "noise_targeted_success": float(noise.success.float().mean()),
               # noise norms over the successful attacks (a failed one ran to its budget); _all: every pair
               "noise_mean_linf": _mean(linf[noise.success]), "noise_mean_linf_255": _mean(linf[noise.success]) * 255,
               "noise_mean_l2": _mean(l2[noise.success]), "noise_mean_linf_all_255": float(linf.mean() * 255),
               "noise_mean_l2_all": float(l2.mean()), "noise_unchanged_pixel_share": float(zero_share.mean()),
               "fgsm_accuracy": sweep["fgsm"], "pgd_accuracy": sweep["pgd"]}
    if baseline is not None:
        summary["course_baseline_attack"] = course_finding(config, baseline, x, y)
        summary["course_baseline_attack"] |= {"fgsm_accuracy": curves["course checkpoint"]["fgsm"],
                                              "pgd_accuracy": curves["course checkpoint"]["pgd"]}
    return summary


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else math.nan


def course_finding(config: Config, baseline: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The course checkpoint under attack: how many cars untargeted PGD at 64/255 flips, and
    whether any image in [0, 1] (eps = 1: the whole valid range) makes it say truck or cat."""
    cars = x[y == 0]
    x_adv = attacks.pgd(baseline, cars, torch.zeros(len(cars), dtype=torch.long), 64 / 255, alpha=4 / 255,
                        steps=40, generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.no_grad():
        out["cars_flipped_by_pgd_64"] = float((baseline(x_adv).argmax(1) != 0).float().mean())
    for label, name in ((1, "truck"), (2, "cat")):
        target = torch.full((len(x),), label, dtype=torch.long)
        anything = attacks.pgd(baseline, x, target, 1.0, alpha=8 / 255, steps=100, targeted=True,
                               generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = baseline(anything)
        out[f"any_image_says_{name}"] = float((logits.argmax(1) == label).float().mean())
        out[f"best_{name}_minus_car_logit"] = float((logits[:, label] - logits[:, 0]).max())
    net = baseline.net
    weight, bias = net.fc3.weight.detach(), net.fc3.bias.detach()
    out["fc3_bias"] = dict(zip(CLASSES, bias.tolist()))
    out["cat_minus_car_bias"] = float(bias[2] - bias[0])
    out["cosine_w_cat_w_car"] = float(F.cosine_similarity(weight[2], weight[0], dim=0))
    with torch.no_grad():
        features = baseline.features(x)  # (N, 84), after ReLU
    out["penultimate_mean"] = float(features.mean())
    out["explanation"] = (
        f"logit_cat - logit_car = (w_cat - w_car) . h + (b_cat - b_car), with b_cat - b_car = "
        f"{out['cat_minus_car_bias']:.2f} and h the 84 ReLU features (mean {out['penultimate_mean']:.2f}); "
        f"w_cat and w_car point in opposite directions (cosine {out['cosine_w_cat_w_car']:.2f}), and the "
        f"features any image in [0, 1] can produce stay too small to close the bias gap: the best margin found "
        f"with the whole valid range as budget is {out['best_cat_minus_car_logit']:.2f} < 0. The same bias "
        f"makes untargeted attacks on cars fail (flipped: {out['cars_flipped_by_pgd_64']:.0%} at 64/255): "
        f"trained on 88 % cars, the model answers car from its bias more than from the image")
    return out


def sweep_figure(curves: dict, count: int):
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, methods in curves.items():
        for method, accs in methods.items():
            levels = [float(k) for k in accs]
            axis.plot([max(level, 0.5) for level in levels], list(accs.values()), marker="o",
                      linestyle="-" if method == "pgd" else "--", label=f"{name}: {method.upper()}")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("epsilon (grey levels /255; 0 drawn at 0.5)")
    axis.set_ylabel(f"accuracy on {count} balanced test images")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def examples_figure(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, sources: torch.Tensor,
                    targets: torch.Tensor, rows: int):
    """Rows of original / noise (scaled to be visible) / adversarial, with predictions."""
    with torch.no_grad():
        clean, adv = model(x).argmax(1), model(x_adv).argmax(1)
    real = clean != targets  # pairs where there was something to attack
    chosen = []
    for t in range(len(CLASSES)):  # spread the examples over the targets, successes first
        for wanted in (real & (adv == targets), real):
            pool = [i for i in torch.nonzero(wanted & (targets == t)).flatten().tolist() if i not in chosen]
            chosen += pool[: max(rows // len(CLASSES) + 1, 1) - sum(int(targets[i]) == t for i in chosen)]
    chosen = (chosen or list(range(min(rows, len(x)))))[:rows]
    with torch.no_grad():
        p_clean = model(x[chosen]).softmax(1)
        p_adv = model(x_adv[chosen]).softmax(1)
    images, titles = [], []
    for i, index in enumerate(chosen):
        noise = x_adv[index] - x[index]
        scale = noise.abs().max().clamp_min(1e-8)
        images += [x[index], noise / (2 * scale) + 0.5, x_adv[index]]
        titles += [f"{CLASSES[int(p_clean[i].argmax())]} {p_clean[i].max():.2f} (true {CLASSES[int(sources[index])]})",
                   f"noise x{0.5 / float(scale):.0f}, Linf {float(scale) * 255:.1f}/255" if scale > 1e-6 else "no noise",
                   f"{CLASSES[int(p_adv[i].argmax())]} {p_adv[i].max():.2f} (target {CLASSES[int(targets[index])]})"]
    return image_grid(torch.stack(images), nrow=3, titles=titles, scale=2.0,
                      title="original / optimised noise (scaled) / adversarial")
