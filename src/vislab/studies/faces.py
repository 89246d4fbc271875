"""The faces study: does a pair of LFW face images show the same person?

    vislab run faces --data-root ../shared/data                          # restricted, fast default
    vislab run faces --data-root ../shared/data --protocol=unrestricted  # identity labels
    vislab run faces --data-root ../shared/data --config configs/faces/koch.yaml
    vislab eval faces --checkpoint RUN_DIR --pairs-file pairs.txt        # any LFW pairs file

Protocols (named in every summary), both on LFW View 1 (pairsDevTrain.txt -> pairsDevTest.txt),
whose people never meet:
- `restricted`: only the training pairs and the fact same/different. Pair-derived identities
  (connected components of the same-person pairs; an image in no same pair is its own
  identity) feed the identity losses; validation is a stratified share of the pairs.
- `unrestricted`: every image of every person of the training list, with its name as label
  (no outside data). A share of those people is held out and their images form the
  validation pairs.
No image of a person of the test list (or of --pairs-file) is loaded for training: the keys
are checked before any image is read (`guard_no_test_people`).

Reads top to bottom: config, data (every pair checked and every image decoded before
training), model and loss, training (vislab.engine.fit), threshold chosen on the validation
pairs, test figures, one-shot N-way accuracy, plots and tables.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vislab.analysis import faces as pair_metrics
from vislab.analysis.compare import flat_config
from vislab.analysis.plots import training_curves, write_data_overview
from vislab.config import CommonConfig, at_least, check_lr_scaling, in_range, one_of, to_dict
from vislab.data import BUILTIN, resolve_data_root
from vislab.data.lfw import Pair, check_pairs, default_pairs_files, find_image_dir, image_path, list_people, load_faces, parse_pairs
from vislab.data.splits import stratified_split
from vislab.engine import (epoch_generator, fit, load_model_state, local_batch_size, log, make_fabric, make_optimizer,
                           predict, resolve_precision, scaled_lr, unwrap)
from vislab.errors import VislabError
from vislab.models.faces import ConvTower, SiameseNet, koch_initialise
from vislab.models.registry import count_parameters, model_entry
from vislab.runs import Run, load_checkpoint

PROTOCOLS = ("restricted", "unrestricted")
PAIR_LOSSES = ("binary", "contrastive")  # trained on pairs (restricted: the listed ones)
IDENTITY_LOSSES = ("triplet", "ntxent", "arcface", "cosface")  # trained on (pseudo-)identity labels
MODELS = ("koch", "resface", "tower")


@dataclass(frozen=True)
class ConvBlock:
    out_channels: int = 64  # filters
    kernel: int = 3  # square kernel side
    stride: int = 1  # conv stride
    padding: int = 0  # zero padding on each side
    pool: bool = False  # 2x2 max-pool after the ReLU
    batchnorm: bool = False  # batch-norm after the conv
    dropout: float = 0.0  # channel dropout after the block


@dataclass(frozen=True)
class FCLayer:
    out_features: int = 4096  # units
    activation: str = "sigmoid"  # 'relu', 'sigmoid' or 'none'
    batchnorm: bool = False  # batch-norm after the linear layer
    dropout: float = 0.0  # dropout after the activation


@dataclass(frozen=True)
class Augment:
    online: bool = True  # augment every training batch afresh with the settings below
    offline_copies: int = 1  # training images multiplied by this with fixed augmented copies made once (report 000: 3 or 9; 1 = none)
    flip: bool = True  # random left-right flip (online)
    rotate: float = 8.0  # largest rotation, degrees (online affine)
    scale: float = 0.08  # largest zoom in or out, fraction
    translate: float = 0.05  # largest shift, fraction of the side
    shear: float = 0.0  # largest shear, degrees
    brightness: float = 0.25  # largest brightness change, fraction
    contrast: float = 0.25  # largest contrast change, fraction
    grayscale: float = 0.1  # probability of turning a colour image gray
    noise: float = 0.0  # std of added Gaussian noise (pixel values in [0, 1])
    blur: float = 0.0  # probability of a Gaussian blur (sigma 0.3-1.2 px)


@dataclass(frozen=True)
class Config(CommonConfig):
    protocol: str = "restricted"  # 'restricted' (training pairs only) or 'unrestricted' (identity labels of the training-list people)
    pairs_file: str = ""  # pairs file to test on ('' = lfw/pairsDevTest.txt); View 1 or View 2 layout
    epochs: int = 90  # training epochs (an upper bound when patience > 0)
    precision: str = "auto"  # bf16 autocast where the CPU/GPU computes in bf16 (a resface training step 1.64x faster here), else 32-true
    batch_size: int = 64  # pairs per step over all processes (each pair two images)
    pairs_per_epoch: int = 1536  # pairs drawn per epoch, so that both protocols cost the same per epoch (0 = one pass: every listed pair, or every training image as first image once)
    model_name: str = "resface"  # 'koch' (Koch 2015), 'resface' (small ResNet) or 'tower' (conv_blocks/fc_layers)
    conv_blocks: list[ConvBlock] = field(default_factory=list)  # tower conv blocks, in order (model_name=tower)
    fc_layers: list[FCLayer] = field(default_factory=list)  # tower FC layers after the flatten (model_name=tower)
    koch_init: bool = True  # Koch initialisation for koch/tower: conv N(0,0.01), FC N(0,0.2), biases N(0.5,0.01)
    batchnorm: bool = False  # koch: batch-norm in every conv block
    dropout: float = 0.0  # koch: dropout in every block; resface: before the embedding layer
    widths: list[int] = field(default_factory=lambda: [24, 48, 96, 192])  # resface: channels per stage
    depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # resface: basic blocks per stage
    embedding_dim: int = 128  # resface: embedding size
    image_size: int = 48  # network input side in pixels (koch: 105; report 000: 250)
    crop: int = 112  # centre crop of the 250x250 image before resizing (0 = whole image)
    grayscale: bool = False  # one-channel input
    normalize: str = "unit"  # 'unit' (/255) or 'meanstd' (per-channel mean/std of the training images)
    loss: str = "auto"  # binary (Koch head), contrastive, triplet (in-batch hard mining), ntxent, arcface, cosface; auto: ntxent if restricted, cosface if unrestricted
    head: str = "auto"  # pair score: 'l1' (Koch: linear on |e1-e2|, sigmoid) or 'cosine'; auto: l1 for the binary loss
    temperature: float = 0.1  # ntxent temperature
    triplet_margin: float = 0.2  # triplet margin (distance of normalised embeddings)
    contrastive_margin: float = 0.3  # contrastive: different pairs are pushed below this cosine similarity
    arcface_margin: float = 28.6  # arcface additive angular margin, degrees
    cosface_margin: float = 0.25  # cosface additive cosine margin
    margin_scale: float = 30.0  # arcface/cosface logit scale
    val_unseen_images: bool = True  # restricted: drop the training pairs that share an image with a validation pair (the reports kept them)
    val_fraction: float = 0.15  # restricted: share of the training pairs held out (stratified same/different); unrestricted: share of people held out
    optimizer: str = "adamw"  # 'adamw', 'adam' (L2 as weight decay, as the reports) or 'sgd' (Nesterov)
    lr: float = 3e-3  # peak learning rate
    lr_scaling: str = "none"  # learning rate for another batch_size: 'none' (lr as given), 'linear' or 'sqrt' (lr times (batch_size / lr_batch_size), or its square root)
    lr_batch_size: int = 0  # global batch size the lr was tuned for (needed by lr_scaling 'linear' and 'sqrt')
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty (decoupled for adamw)
    schedule: str = "onecycle"  # 'onecycle', 'cosine', 'exponential' (lr_decay per epoch, Koch) or 'constant'
    lr_decay: float = 0.99  # 'exponential': learning-rate factor per epoch
    monitor: str = "val_auc"  # validation figure that picks the best checkpoint and drives early stopping: val_loss, val_auc or val_acc
    patience: int = 0  # stop after this many epochs without a better monitor value (0 = never)
    tta_flip: bool = True  # evaluation: embedding = mean of the image's and its mirror's
    oneshot_trials: int = 1000  # N-way one-shot trials per N
    oneshot_images_per_person: int = 4  # one-shot pool: at most this many images of each person of the test pairs
    show_pairs: int = 8  # pairs in the random-batch and worst-mistake figures
    augment: Augment = field(default_factory=Augment)  # training augmentation

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("protocol", self.protocol, PROTOCOLS)
        one_of("model_name", self.model_name, MODELS)
        one_of("normalize", self.normalize, ("unit", "meanstd"))
        one_of("loss", self.loss, ("auto",) + PAIR_LOSSES + IDENTITY_LOSSES)
        one_of("head", self.head, ("auto", "l1", "cosine"))
        one_of("optimizer", self.optimizer, ("adamw", "adam", "sgd"))
        one_of("schedule", self.schedule, ("onecycle", "cosine", "exponential", "constant"))
        check_lr_scaling(self.lr_scaling, self.lr_batch_size)
        one_of("monitor", self.monitor, ("val_loss", "val_auc", "val_acc"))
        at_least("image_size", self.image_size, 8)
        at_least("crop", self.crop, 0)
        in_range("val_fraction", self.val_fraction, 0.05, 0.5)
        at_least("lr", self.lr, 0.0)
        at_least("patience", self.patience, 0)
        at_least("oneshot_trials", self.oneshot_trials, 1)
        at_least("pairs_per_epoch", self.pairs_per_epoch, 0)
        at_least("oneshot_images_per_person", self.oneshot_images_per_person, 2)
        at_least("augment.offline_copies", self.augment.offline_copies, 1)
        in_range("dropout", self.dropout, 0.0, 0.95)
        if self.model_name == "tower" and not self.conv_blocks:
            raise VislabError("config key 'conv_blocks': model_name=tower needs at least one conv block")
        if self.resolved_head() == "l1" and self.resolved_loss() != "binary":
            raise VislabError(f"config key 'head': the l1 head gives a logit for the binary loss only; "
                              f"use head=cosine with loss={self.resolved_loss()}")
        if self.resolved_loss() == "binary" and self.resolved_head() != "l1":
            raise VislabError("config key 'loss': the binary loss needs head=l1 (Koch's head)")

    def resolved_loss(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "ntxent" if self.protocol == "restricted" else "cosface"

    def resolved_head(self) -> str:
        if self.head != "auto":
            return self.head
        return "l1" if self.resolved_loss() == "binary" else "cosine"


DEMO = {"data_root": BUILTIN, "epochs": 4, "batch_size": 32, "pairs_per_epoch": 0, "image_size": 32, "crop": 160,
        "widths": [16, 32, 64, 128], "embedding_dim": 64, "oneshot_trials": 200}


def run_name(config: Config) -> str:
    return f"{config.protocol}-{config.model_name}-{config.resolved_loss()}"


# ---------------------------------------------------------------------------------------------
# data: every pair checked and every image decoded before training starts


@dataclass
class PairSet:
    """Pairs over one tensor of distinct images: images[first[k]] vs images[second[k]]."""

    images: torch.Tensor  # (M, C, S, S) uint8
    keys: list[tuple[str, int]]  # (name, index) of each image
    first: torch.Tensor  # (P,) int64
    second: torch.Tensor  # (P,) int64
    same: torch.Tensor  # (P,) float32, 1 = same person
    rows: list[Pair]  # the pairs as read (names, line numbers)
    file: str  # where they come from

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class FaceData:
    image_dir: Path
    train_images: torch.Tensor  # (N, C, S, S) uint8
    train_labels: torch.Tensor  # (N,) int64: identity (unrestricted) or pair-derived identity (restricted)
    train_pairs: torch.Tensor | None  # (P, 2) indices into train_images with train_same, restricted only
    train_same: torch.Tensor | None  # (P,) float32
    val: PairSet
    test: PairSet
    oneshot_images: torch.Tensor  # (K, C, S, S) uint8: people of the test pairs, up to n images each
    oneshot_people: torch.Tensor  # (K,) int64


def data_root_and_files(config: Config) -> tuple[Path, Path, Path, Path]:
    """(image folder, training pairs file, View-1 test pairs file, pairs file to test on)."""
    root = resolve_data_root(config.data_root)
    if root == BUILTIN:
        from vislab.data.builtin import synthetic_lfw

        root = synthetic_lfw()
    root = Path(root)
    image_dir = find_image_dir(root)
    train_file, test_file = default_pairs_files(root)
    for path in (train_file, test_file):
        if not path.is_file():
            raise VislabError(f"{path}: pairs file not found; --data-root should hold lfw/pairsDevTrain.txt "
                              "and lfw/pairsDevTest.txt")
    pairs_file = Path(config.pairs_file).expanduser() if config.pairs_file else test_file
    return image_dir, train_file, test_file, pairs_file


def read_pairs(image_dir: Path, path: Path) -> list[Pair]:
    pairs = parse_pairs(path)
    check_pairs(image_dir, pairs, path)
    return pairs


def names_of(pairs: list[Pair]) -> set[str]:
    return {pair.name1 for pair in pairs} | {pair.name2 for pair in pairs}


def guard_no_test_people(keys: list[tuple[str, int]], test_people: set[str], what: str) -> None:
    """Refuse to load any image of a test person for training (the protocols' one rule)."""
    leaked = sorted({name for name, _ in keys if name in test_people})
    if leaked:
        raise VislabError(f"{what} would use {len(leaked)} people of the test pairs (e.g. {leaked[0]}); "
                          "training and test people must not overlap: use a pairs file of other people")


def faces(config: Config, image_dir: Path, keys: list[tuple[str, int]], pairs: list[Pair] | None = None,
          pairs_file: Path | None = None) -> torch.Tensor:
    """Decoded, cropped, resized faces (cached); a bad image is named with the pairs line using it."""
    try:
        return load_faces(image_dir, keys, size=config.image_size, grayscale=config.grayscale,
                          crop=config.crop or None, progress=_progress)
    except VislabError as error:
        for pair in pairs or ():
            for name, index in ((pair.name1, pair.index1), (pair.name2, pair.index2)):
                if str(image_path(image_dir, name, index)) in str(error):
                    raise VislabError(f"{pairs_file}:{pair.line}: {error}") from None
        raise


def _progress(done: int, total: int) -> None:
    if done == total or done % 2048 < 256:
        log(f"faces: decoded {done}/{total} images")


def pair_set(config: Config, image_dir: Path, pairs: list[Pair], file: Path) -> PairSet:
    keys = sorted({(p.name1, p.index1) for p in pairs} | {(p.name2, p.index2) for p in pairs})
    where = {key: i for i, key in enumerate(keys)}
    return PairSet(
        images=faces(config, image_dir, keys, pairs, file),
        keys=keys,
        first=torch.tensor([where[(p.name1, p.index1)] for p in pairs]),
        second=torch.tensor([where[(p.name2, p.index2)] for p in pairs]),
        same=torch.tensor([float(p.same) for p in pairs]),
        rows=list(pairs),
        file=str(file),
    )


def pair_components(keys: list[tuple[str, int]], pairs: list[Pair]) -> torch.Tensor:
    """Restricted protocol's identities: connected components of images joined by same-person
    pairs (union-find on image keys, never on names); an image in no same pair stands alone."""
    parent = list(range(len(keys)))
    where = {key: i for i, key in enumerate(keys)}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        if pair.same:
            a, b = root(where[(pair.name1, pair.index1)]), root(where[(pair.name2, pair.index2)])
            parent[max(a, b)] = min(a, b)
    roots = [root(i) for i in range(len(keys))]
    relabel = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return torch.tensor([relabel[r] for r in roots])


def load_data(config: Config, *, for_training: bool = True) -> FaceData:
    image_dir, train_file, test_file, pairs_file = data_root_and_files(config)
    train_rows = read_pairs(image_dir, train_file)
    test_rows = read_pairs(image_dir, pairs_file)
    test_people = names_of(test_rows) | (names_of(parse_pairs(test_file)) if pairs_file != test_file else set())
    generator = random.Random(config.seed)

    if config.protocol == "restricted":
        same = torch.tensor([pair.same for pair in train_rows])
        keep, held_out = stratified_split(same.long(), config.val_fraction, config.seed)
        fit_rows = [train_rows[i] for i in keep.tolist()]
        val_rows = [train_rows[i] for i in held_out.tolist()]
        if config.val_unseen_images:  # validation images are never trained on, as test images
            val_keys = {(p.name1, p.index1) for p in val_rows} | {(p.name2, p.index2) for p in val_rows}
            fit_rows = [p for p in fit_rows if (p.name1, p.index1) not in val_keys and (p.name2, p.index2) not in val_keys]
        train_keys = sorted({(p.name1, p.index1) for p in fit_rows} | {(p.name2, p.index2) for p in fit_rows})
        guard_no_test_people(train_keys, test_people, f"training pairs {train_file}")
        train_labels = pair_components(train_keys, fit_rows)
        where = {key: i for i, key in enumerate(train_keys)}
        train_pairs = torch.tensor([[where[(p.name1, p.index1)], where[(p.name2, p.index2)]] for p in fit_rows])
        train_same = torch.tensor([float(p.same) for p in fit_rows])
        train_images = faces(config, image_dir, train_keys, fit_rows, train_file)
        val = pair_set(config, image_dir, val_rows, train_file)
    else:
        people = list_people(image_dir)
        train_people = sorted(names_of(train_rows))
        guard_no_test_people([(name, 1) for name in train_people], test_people, f"training list {train_file}")
        # Validation people: a share of the training-list people with 2-20 images (keeping the
        # big classes for training); their images form the validation pairs.
        candidates = [name for name in train_people if 2 <= people[name] <= 20]
        generator.shuffle(candidates)
        val_people = sorted(candidates[: max(2, round(config.val_fraction * len(candidates)))])
        fit_people = [name for name in train_people if name not in set(val_people)]
        train_keys = [(name, index) for name in fit_people for index in range(1, people[name] + 1)]
        guard_no_test_people(train_keys, test_people, f"training list {train_file}")
        label_of = {name: n for n, name in enumerate(fit_people)}
        train_labels = torch.tensor([label_of[name] for name, _ in train_keys])
        train_pairs = train_same = None
        train_images = faces(config, image_dir, train_keys)
        val = pair_set(config, image_dir, _validation_pairs(val_people, people, generator), train_file)
    test = pair_set(config, image_dir, test_rows, pairs_file)

    oneshot_images, oneshot_people = _oneshot_pool(config, image_dir, test_rows)
    return FaceData(image_dir, train_images, train_labels, train_pairs, train_same, val, test, oneshot_images,
                    oneshot_people)


def data_figures(config: Config, data: FaceData, run: Run, shown: int = 4) -> None:
    """The report's data overview: same and different validation pairs (test pairs when only
    evaluating), and pair counts per split."""
    def kinds(same: torch.Tensor) -> dict[str, int]:
        return {"same": int((same > 0.5).sum()), "different": int((same < 0.5).sum())}

    counts = {"train": kinds(data.train_same)} if data.train_same is not None else {}
    counts |= {"validation": kinds(data.val.same)} if data.val is not None else {}
    counts |= {"test": kinds(data.test.same)}
    notes = {"train": f"{len(data.train_images)} images of {int(data.train_labels.max()) + 1} "
                      f"{'pair-linked identities' if config.protocol == 'restricted' else 'people'}"} \
        if len(data.train_images) else {}
    pairs, which = (data.val, "Validation pairs (training-list people)") if data.val is not None else (data.test, "Test pairs")
    index = []
    for kind in (pairs.same > 0.5, pairs.same < 0.5):  # `shown` pairs of each kind, of different people first
        candidates = torch.nonzero(kind).flatten().tolist()
        firsts = list({pairs.rows[i].name1: i for i in reversed(candidates)}.values())
        index += (firsts + [i for i in candidates if i not in firsts])[:shown]
    captions = [f"same: {pairs.rows[i].name1}" if pairs.same[i] > 0.5 else "different people" for i in index]
    index = torch.tensor(index, dtype=torch.long)
    samples = pair_metrics.pair_grid(pairs.images[pairs.first[index]], pairs.images[pairs.second[index]], captions, which)
    write_data_overview(run, counts, samples, title=f"faces {config.protocol}: pairs per split", notes=notes)


def _count(image_dir: Path, name: str) -> int:
    return sum(1 for path in (image_dir / name).glob(f"{name}_[0-9][0-9][0-9][0-9].jpg"))


def _validation_pairs(val_people: list[str], people: dict[str, int], generator: random.Random) -> list[Pair]:
    """Up to 3 same pairs per held-out person and as many different pairs (line 0: generated)."""
    same = []
    for name in val_people:
        combos = [(i, j) for i in range(1, people[name] + 1) for j in range(i + 1, people[name] + 1)]
        same += [Pair(name, i, name, j, 0) for i, j in generator.sample(combos, min(3, len(combos)))]
    different: set[tuple[str, int, str, int]] = set()
    while len(different) < len(same):
        a, b = generator.sample(val_people, 2)
        different.add((a, generator.randint(1, people[a]), b, generator.randint(1, people[b])))
    return same + [Pair(a, i, b, j, 0) for a, i, b, j in sorted(different)]


# ---------------------------------------------------------------------------------------------
# augmentation on whole batches


def augment(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) uint8 -> float in [0, 1], randomly flipped, warped, recoloured, per image."""
    x = x.float().div_(255)
    batch = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:  # (B,) in [-limit, limit]
        return (torch.rand(batch, generator=generator) * 2 - 1) * limit

    if aug.flip:
        flip = (torch.rand(batch, generator=generator) < 0.5).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if aug.rotate or aug.scale or aug.translate or aug.shear:
        angle, shear = torch.deg2rad(uniform(aug.rotate)), torch.deg2rad(uniform(aug.shear))
        zoom = 1 + uniform(aug.scale)
        theta = torch.zeros(batch, 2, 3)  # output -> input sampling grid, in [-1, 1] coordinates
        theta[:, 0, 0] = torch.cos(angle) / zoom
        theta[:, 0, 1] = (-torch.sin(angle) + torch.tan(shear)) / zoom
        theta[:, 1, 0] = torch.sin(angle) / zoom
        theta[:, 1, 1] = torch.cos(angle) / zoom
        theta[:, :, 2] = torch.stack([uniform(2 * aug.translate), uniform(2 * aug.translate)], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if aug.brightness:
        x = x * (1 + uniform(aug.brightness)).view(-1, 1, 1, 1)
    if aug.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(aug.contrast)).view(-1, 1, 1, 1) + mean
    if aug.grayscale and x.shape[1] == 3:
        gray = (torch.rand(batch, generator=generator) < aug.grayscale).view(-1, 1, 1, 1)
        x = torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    if aug.blur:
        from torchvision.transforms.v2.functional import gaussian_blur

        blur = torch.rand(batch, generator=generator) < aug.blur
        if blur.any():
            sigma = 0.3 + 0.9 * torch.rand(1, generator=generator).item()
            x[blur] = gaussian_blur(x[blur], kernel_size=[5, 5], sigma=[sigma, sigma])
    if aug.noise:
        x = x + aug.noise * torch.randn(x.shape, generator=generator)
    return x.clamp_(0, 1)


def offline_copies(images: torch.Tensor, aug: Augment, seed: int) -> torch.Tensor:
    """The images followed by (offline_copies - 1) augmented copies made once (report 000's x3/x9)."""
    copies = [images]
    for copy in range(1, aug.offline_copies):
        generator = epoch_generator(seed, 0, stream=100 + copy)
        copies.append(torch.cat([(augment(chunk, aug, generator) * 255).round().to(torch.uint8)
                                 for chunk in images.split(512)]))
    return torch.cat(copies)


# ---------------------------------------------------------------------------------------------
# model and loss


def build_net(config: Config, in_channels: int) -> SiameseNet:
    head = config.resolved_head()
    if config.model_name == "koch":
        net = model_entry("koch").build(in_channels=in_channels, image_size=config.image_size,
                                        batchnorm=config.batchnorm, dropout=config.dropout, koch_init=config.koch_init)
    elif config.model_name == "resface":
        return model_entry("resface").build(in_channels=in_channels, widths=list(config.widths),
                                            depths=list(config.depths), embedding_dim=config.embedding_dim,
                                            dropout=config.dropout, head=head)
    else:
        try:
            tower = ConvTower(in_channels=in_channels, image_size=config.image_size,
                              conv_blocks=[to_dict(block) for block in config.conv_blocks],
                              fc_layers=[to_dict(layer) for layer in config.fc_layers], koch_init=config.koch_init)
        except ValueError as error:
            raise VislabError(f"config key 'conv_blocks': {error}") from None
        net = SiameseNet(tower=tower, head="l1")
        if config.koch_init:
            koch_initialise(net.l1_head)
    if head == "cosine":  # the Koch-style towers with a cosine score: drop the unused L1 layer
        net = SiameseNet(tower=net.tower, head="cosine")
    return net


class Trainable(nn.Module):
    """The Siamese net and its loss (ArcFace/CosFace own class weights), called as one module so
    that Fabric's precision and the checkpoint cover both. forward(x, labels) -> loss, where x
    holds B first images then B second images (B, C, S, S each)."""

    def __init__(self, net: SiameseNet, config: Config, num_classes: int) -> None:
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        self.net, self.kind = net, config.resolved_loss()
        self.miner = None
        dim = net.tower.embedding_dim
        if self.kind == "contrastive":
            self.loss_fn = losses.ContrastiveLoss(pos_margin=1.0, neg_margin=config.contrastive_margin,
                                                  distance=distances.CosineSimilarity())
        elif self.kind == "triplet":
            self.loss_fn = losses.TripletMarginLoss(margin=config.triplet_margin)
            self.miner = miners.BatchHardMiner()
        elif self.kind == "ntxent":
            self.loss_fn = losses.NTXentLoss(temperature=config.temperature)
        elif self.kind == "arcface":
            self.loss_fn = losses.ArcFaceLoss(num_classes, dim, margin=config.arcface_margin, scale=config.margin_scale)
        elif self.kind == "cosface":
            self.loss_fn = losses.CosFaceLoss(num_classes, dim, margin=config.cosface_margin, scale=config.margin_scale)
        else:
            self.loss_fn = None

    def forward(self, x: torch.Tensor, labels: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        embeddings = self.net.embed(x).float()  # (2B, D)
        half = len(x) // 2
        if self.kind == "binary":
            logits = self.net.pair_logit(embeddings[:half], embeddings[half:])
            return F.binary_cross_entropy_with_logits(logits, same)
        if self.kind == "contrastive":
            pairs = torch.arange(half)
            positive, negative = pairs[same > 0.5], pairs[same <= 0.5]
            indices = (positive, positive + half, negative, negative + half)
            return self.loss_fn(embeddings, torch.zeros(len(x), dtype=torch.long), indices_tuple=indices)
        if self.miner is not None:
            return self.loss_fn(embeddings, labels, self.miner(embeddings, labels))
        return self.loss_fn(embeddings, labels)


# ---------------------------------------------------------------------------------------------
# scores


def inputs(x_uint8: torch.Tensor, norm: dict) -> torch.Tensor:
    return normalise(x_uint8.float().div_(255), norm)


def normalise(x: torch.Tensor, norm: dict) -> torch.Tensor:
    if norm["mean"] is None:
        return x
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


def embed_all(net: SiameseNet, images: torch.Tensor, norm: dict, tta_flip: bool) -> torch.Tensor:
    """(M, C, S, S) uint8 -> (M, D) embeddings, eval mode; optionally averaged with the mirror's."""

    def forward(model, batch):
        x = inputs(batch, norm)
        e = model.embed(x)
        return (e + model.embed(x.flip(-1))) / 2 if tta_flip else e

    return predict(net, images.split(256), forward)


@torch.inference_mode()
def pair_scores(net: SiameseNet, embeddings: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Same-person scores in [0, 1]: sigmoid of the Koch logit, or (1 + cosine) / 2."""
    out = []
    for a, b in zip(first.split(4096), second.split(4096)):
        value = net.pair_logit(embeddings[a], embeddings[b]).float()
        out.append(torch.sigmoid(value) if net.head == "l1" else (1 + value) / 2)
    return torch.cat(out) if out else torch.empty(0)


def score_pairs(net: SiameseNet, pairs: PairSet, norm: dict, tta_flip: bool) -> torch.Tensor:
    embeddings = embed_all(net, pairs.images, norm, tta_flip)
    return pair_scores(net, embeddings, pairs.first, pairs.second)


def val_figures(net: SiameseNet, val: PairSet, norm: dict, kind: str) -> dict[str, float]:
    scores = score_pairs(net, val, norm, tta_flip=False).clamp(1e-6, 1 - 1e-6)
    if kind == "binary":  # the training loss itself
        loss = F.binary_cross_entropy(scores, val.same).item()
    else:  # a cosine contrastive loss: same pairs towards 1, different pairs below 0.5 (cosine 0)
        cosine = scores * 2 - 1
        loss = (val.same * (1 - cosine) + (1 - val.same) * cosine.clamp(min=0)).mean().item()
    threshold, accuracy = pair_metrics.choose_threshold(scores, val.same)
    return {"val_loss": loss, "val_acc": accuracy, "val_auc": pair_metrics.roc_figures(scores, val.same)["auc"]}


# ---------------------------------------------------------------------------------------------
# training


class EpochBatches:
    """One epoch of training batches (x (2B, C, S, S) uint8, labels (2B,), same (B,)): the listed
    pairs (pair losses, restricted), or each image with another of its identity (identity
    losses; unrestricted pair losses take the next anchor's partner as a different pair)."""

    def __init__(self, data: FaceData, images: torch.Tensor, config: Config, epoch: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.data, self.images, self.config = data, images, config
        self.rank, self.world_size = rank, world_size
        self.generator = epoch_generator(config.seed, epoch)
        copies = len(images) // len(data.train_images)
        n = len(data.train_images)
        if data.train_pairs is not None and config.resolved_loss() in PAIR_LOSSES:
            pairs = torch.cat([data.train_pairs + c * n for c in range(copies)])
            same = data.train_same.repeat(copies)
            order = torch.randperm(len(pairs), generator=self.generator)
            self.first, self.second, self.same = pairs[order, 0], pairs[order, 1], same[order]
            self.labels = None
        else:
            labels = data.train_labels.repeat(copies)
            anchors = torch.randperm(len(labels), generator=self.generator)
            self.first = anchors
            self.second = self._partners(labels, anchors)
            self.labels = labels
        if config.pairs_per_epoch:  # a fixed number of pairs: the shuffled order, repeated as needed
            repeat, keep = -(-config.pairs_per_epoch // len(self.first)), config.pairs_per_epoch
            self.first, self.second = self.first.repeat(repeat)[:keep], self.second.repeat(repeat)[:keep]
            if self.labels is None:
                self.same = self.same.repeat(repeat)[:keep]
        self.batches = len(self.first) // config.batch_size

    def _partners(self, labels: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Another image (any copy) of each anchor's identity; itself when it has no other."""
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        starts = torch.cumsum(counts, 0) - counts
        anchor_labels = labels[anchors]
        offset = (torch.rand(len(anchors), generator=self.generator) * counts[anchor_labels]).long()
        partner = order[starts[anchor_labels] + offset]
        lonely = counts[anchor_labels] > 1
        clash = (partner == anchors) & lonely  # drew itself though others exist: take the next one
        shift = (offset + 1) % counts[anchor_labels]
        partner = torch.where(clash, order[starts[anchor_labels] + shift], partner)
        return partner

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        size = self.config.batch_size
        for b in range(self.batches):
            first = self.first[b * size:(b + 1) * size]
            second = self.second[b * size:(b + 1) * size]
            if self.labels is None:
                same = self.same[b * size:(b + 1) * size]
                labels = torch.zeros(2 * size, dtype=torch.long)
            else:
                if self.config.resolved_loss() in PAIR_LOSSES:  # half the pairs: a different person
                    swap = torch.arange(size) % 2 == 1
                    other = second.roll(1)
                    swap &= self.labels[other] != self.labels[first]
                    second = torch.where(swap, other, second)
                same = (self.labels[first] == self.labels[second]).float()
                labels = torch.cat([self.labels[first], self.labels[second]])
            x = torch.cat([self.images[first], self.images[second]])  # (2B, C, S, S) uint8
            x = augment(x, self.config.augment, self.generator) if self.config.augment.online else x.float().div_(255)
            if self.world_size > 1:  # this process's share of the global batch, made and augmented whole
                share = size // self.world_size  # so that every process draws the same random numbers
                mine = torch.arange(self.rank * share, (self.rank + 1) * share)
                both = torch.cat([mine, mine + size])  # its first and second images
                x, labels, same = x[both], labels[both], same[mine]
            yield x, labels, same


def run(config: Config, run: Run, resume: dict | None = None) -> dict:
    fabric = make_fabric(config)
    data = load_data(config)
    data_figures(config, data, run)
    kind = config.resolved_loss()
    log(f"faces ({config.protocol}): {len(data.train_images)} training images, {int(data.train_labels.max()) + 1} "
        f"identities, {len(data.val)} validation pairs, {len(data.test)} test pairs ({data.test.file}); "
        f"model {config.model_name}, loss {kind}")

    channels = data.train_images.shape[1]
    norm = normalisation(config, data.train_images)
    train_images = offline_copies(data.train_images, config.augment, config.seed)
    # NHWC layout: the default run's training took 0.585 instead of 0.72 min (1.23x) in an A/B on LFW
    # (3 epochs, 2 repeats each, same test accuracy); see bench/precision.py for the step alone.
    net = build_net(config, channels).to(memory_format=torch.channels_last)
    model = Trainable(net, config, num_classes=int(data.train_labels.max()) + 1)
    local_batch_size(fabric, config.batch_size)  # batch_size is global: it must split over the processes
    steps = len(EpochBatches(data, train_images, config, 1))
    if steps == 0:
        raise VislabError(f"batch_size {config.batch_size} is larger than the training set; lower it")
    lr = scaled_lr(config.lr, batch_size=config.batch_size, scaling=config.lr_scaling,
                   reference_batch_size=config.lr_batch_size)
    optimizer, scheduler = make_optimizer(model.parameters(), name=config.optimizer, lr=lr,
                                          momentum=config.momentum, weight_decay=config.weight_decay,
                                          schedule=config.schedule, total_steps=config.epochs * steps,
                                          warmup_share=0.2, decay=config.lr_decay, decay_every=steps)

    def training_step(model, batch):
        x, labels, same = batch
        return model(normalise(x, norm), labels, same)

    def validate(model) -> dict[str, float]:
        return val_figures(unwrap(model).net, data.val, norm, kind)

    monitor_mode = "min" if config.monitor == "val_loss" else "max"
    started, cpu_started = time.perf_counter(), time.process_time()
    model, state = fit(fabric, model, optimizer, run=run, config=to_dict(config), epochs=config.epochs,
                       seed=config.seed, train_batches=lambda epoch: EpochBatches(data, train_images, config, epoch,
                                                                                fabric.global_rank, fabric.world_size),
                       training_step=training_step, validate=validate, scheduler=scheduler, scheduler_per_step=True,
                       monitor=config.monitor, mode=monitor_mode, patience=config.patience, resume=resume)
    train_minutes = (time.perf_counter() - started) / 60
    cpu_minutes = (time.process_time() - cpu_started) / 60  # all threads: about threads x wall when alone
    if resume is not None:
        train_minutes += sum(float(row["seconds"]) for row in run.metrics()[: int(resume["epoch"])]) / 60

    # The best checkpoint, its threshold chosen on the validation pairs, saved back for `vislab eval`.
    checkpoint = load_checkpoint(run.checkpoint_path("best.ckpt"))
    trained = unwrap(model)
    trained.load_state_dict(checkpoint["model"])
    net = trained.net
    val_scores = score_pairs(net, data.val, norm, config.tta_flip)
    threshold, val_accuracy = pair_metrics.choose_threshold(val_scores, data.val.same)
    checkpoint |= {"threshold": threshold, "val_accuracy": val_accuracy, "normalisation": norm,
                   "in_channels": channels}
    run.save_checkpoint("best.ckpt", checkpoint)

    rows = run.metrics()
    summary = {
        "protocol": config.protocol,
        **test_summary(config, net, data, norm, threshold, run, val_scores=val_scores),
        "threshold": threshold,
        "val_accuracy": val_accuracy,
        "train_minutes": round(train_minutes, 2),
        "train_cpu_minutes": round(cpu_minutes, 2),
        "threads": torch.get_num_threads(),
        "precision": resolve_precision(config.precision, config.accelerator),
        "model_name": config.model_name,
        "loss": kind,
        "params": count_parameters(net),
        "epochs_run": len(rows),
        "best_epoch": int(checkpoint["epoch"]),
        "training_images": len(data.train_images),
        "data": "builtin synthetic identities" if config.data_root == BUILTIN else "LFW deep-funneled, View 1",
    }
    run.plot("curves", training_curves(rows, title=f"faces {config.protocol}: {config.model_name}, {kind}"))
    experiments_table(run, config, summary)
    return summary


def normalisation(config: Config, images: torch.Tensor) -> dict:
    """{'mean', 'std'} per channel of the training images ('meanstd'), or None for /255 only."""
    if config.normalize == "unit":
        return {"mean": None, "std": None}
    x = images.float().div(255)
    return {"mean": x.mean(dim=(0, 2, 3)).tolist(), "std": x.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()}


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(config: Config, checkpoint: dict, run: Run) -> dict:
    make_fabric(config)
    if "threshold" not in checkpoint:
        raise VislabError("this checkpoint has no validation threshold (it is a last.ckpt or from an unfinished "
                          "run); pass the run folder or its checkpoints/best.ckpt")
    image_dir, train_file, _, pairs_file = data_root_and_files(config)
    test_rows = read_pairs(image_dir, pairs_file)
    test = pair_set(config, image_dir, test_rows, pairs_file)
    oneshot_images, oneshot_people = _oneshot_pool(config, image_dir, test_rows)
    data = FaceData(image_dir, torch.empty(0, 1, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long),
                    None, None, None, test, oneshot_images, oneshot_people)  # type: ignore[arg-type]
    data_figures(config, data, run)
    net = build_net(config, int(checkpoint["in_channels"])).to(memory_format=torch.channels_last)
    state = {key.removeprefix("net."): value for key, value in checkpoint["model"].items() if key.startswith("net.")}
    load_model_state(net, state, "the checkpoint")
    threshold = float(checkpoint["threshold"])
    trained_people = names_of(parse_pairs(train_file))
    summary = {
        "protocol": config.protocol,
        **test_summary(config, net, data, checkpoint["normalisation"], threshold, run),
        "threshold": threshold,
        "val_accuracy": checkpoint.get("val_accuracy"),
        "train_minutes": None,
        "model_name": config.model_name,
        "checkpoint_epoch": checkpoint.get("epoch"),
        "people_shared_with_training_list": len(names_of(test_rows) & trained_people),
    }
    return summary


def _oneshot_pool(config: Config, image_dir: Path, rows: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    people = sorted(names_of(rows))
    keys = [(name, index) for name in people
            for index in range(1, min(_count(image_dir, name), config.oneshot_images_per_person) + 1)]
    person_of = {name: n for n, name in enumerate(people)}
    return faces(config, image_dir, keys), torch.tensor([person_of[name] for name, _ in keys])


def test_summary(config: Config, net: SiameseNet, data: FaceData, norm: dict, threshold: float, run: Run,
                 val_scores: torch.Tensor | None = None) -> dict:
    """Test figures at the validation threshold and at 0.5, ROC/AUC/EER, one-shot, and figures."""
    test = data.test
    scores = score_pairs(net, test, norm, config.tta_flip)
    roc = pair_metrics.roc_figures(scores, test.same)
    summary = {
        "test_accuracy": pair_metrics.accuracy_at(scores, test.same, threshold),
        "test_accuracy_at_0_5": pair_metrics.accuracy_at(scores, test.same, 0.5),
        "test_auc": roc["auc"],
        "test_eer": roc["eer"],
        "oneshot_5way": None,
        "oneshot_20way": None,
        "pairs_file": test.file,
        "test_pairs": len(test),
    }
    embeddings = embed_all(net, data.oneshot_images, norm, config.tta_flip)
    for ways in (5, 20):
        trials = pair_metrics.oneshot_trials(data.oneshot_people, ways, config.oneshot_trials, config.seed)
        if trials is not None:
            probes, candidates = trials
            similarity = pair_scores(net, embeddings, probes.repeat_interleave(ways), candidates.flatten())
            summary[f"oneshot_{ways}way"] = pair_metrics.oneshot_accuracy(similarity.view(-1, ways))
    summary["oneshot_pool"] = f"{int(data.oneshot_people.max()) + 1 if len(data.oneshot_people) else 0} people, " \
                              f"{len(data.oneshot_images)} images"

    curves = {"test": (scores, test.same)}
    if val_scores is not None:
        curves["validation"] = (val_scores, data.val.same)
    run.plot("roc", pair_metrics.roc_figure(curves, title="ROC"))
    run.plot("score_histogram", pair_metrics.score_histogram(scores, test.same, threshold, title="Test pair scores"))
    pair_figures(config, test, scores, threshold, run)
    return summary


def pair_figures(config: Config, test: PairSet, scores: torch.Tensor, threshold: float, run: Run) -> None:
    """A random batch of test pairs with their scores, and the worst false accepts and rejects."""
    k = config.show_pairs
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(len(test), generator=generator)[:k]

    def grid(index: torch.Tensor, title: str):
        captions = [f"{'same' if test.same[i] > 0.5 else 'diff'} {scores[i]:.2f}  l.{test.rows[i].line}" for i in index]
        return pair_metrics.pair_grid(test.images[test.first[index]], test.images[test.second[index]], captions, title)

    run.plot("random_test_pairs", grid(chosen, f"Random test pairs (threshold {threshold:.3f})"))
    predicted = scores >= threshold
    false_accepts = torch.nonzero(predicted & (test.same < 0.5)).flatten()
    false_rejects = torch.nonzero(~predicted & (test.same > 0.5)).flatten()
    worst_accepts = false_accepts[scores[false_accepts].argsort(descending=True)[:k]]
    worst_rejects = false_rejects[scores[false_rejects].argsort()[:k]]
    rows = []
    for kind, index in (("false accept", worst_accepts), ("false reject", worst_rejects)):
        if len(index):
            run.plot(kind.replace(" ", "_") + "s", grid(index, f"Worst {kind}s"))
        rows += [{"kind": kind, "line": test.rows[i].line, "first": f"{test.rows[i].name1} {test.rows[i].index1}",
                  "second": f"{test.rows[i].name2} {test.rows[i].index2}", "score": f"{scores[i]:.4f}"} for i in index]
    run.table("worst_mistakes", rows)


def experiments_table(run: Run, config: Config, summary: dict) -> None:
    """One row per faces run in the same output folder (this one included): the config keys
    that differ from the defaults, epochs, minutes, validation and test accuracy."""
    import yaml

    defaults = flat_config(to_dict(Config()))
    ignore = {"out", "data_root", "num_threads", "pairs_file"}

    def row(name: str, flat: dict, result: dict, epochs: int) -> dict:
        changed = [f"{k}={v}" for k, v in flat.items() if k not in ignore and defaults.get(k) != v]
        return {"run": name, "protocol": result.get("protocol"), "changes": " ".join(changed) or "(defaults)",
                "epochs": epochs, "minutes": result.get("train_minutes"),
                "val_accuracy": _round(result.get("val_accuracy")), "test_accuracy": _round(result.get("test_accuracy")),
                "test_auc": _round(result.get("test_auc"))}

    rows = []
    for folder in sorted(run.path.parent.iterdir()):
        if folder == run.path or not (folder / "summary.json").is_file() or folder.name.split("-")[2:3] == ["eval"]:
            continue
        try:
            other = Run.open(folder)
            result = other.summary()
            flat = flat_config(yaml.safe_load((folder / "config.yaml").read_text()) or {})
        except (VislabError, yaml.YAMLError, OSError):
            continue
        if "train_minutes" in result and result.get("train_minutes") is not None:
            rows.append(row(folder.name, flat, result, len(other.metrics())))
    rows.append(row(run.path.name + " (this run)", flat_config(to_dict(config)), summary, summary["epochs_run"]))
    run.table("experiments", rows)


def _round(value):
    return round(value, 4) if isinstance(value, float) else value

