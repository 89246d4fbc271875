"""The latent study: an MNIST autoencoder and what its latent space supports.

    vislab run latent --data-root ../shared/data                    # the whole chain
    vislab run latent --stage=gan --ae-checkpoint RUN_DIR           # one stage, reusing an AE

Stages, in the order `--stage=all` runs them:

- ae:       a convolutional autoencoder (validation split, reconstructions, test MSE) and a
            small digit classifier trained on all training labels: only a measuring instrument
            (its hidden layer is the Frechet-distance feature space; it judges generated digits);
- fewlabel: digits from 50 labels: the report's head on frozen latents and stacked on the
            encoder, 1-NN and label spreading on the AE latents, and the best method here:
            label spreading over a kNN graph of augmentation-invariant (SimCLR) features
            learnt from the unlabelled training images; accuracy against the number of labels;
- gan:      a GAN whose generator makes AE latent codes (decoded into digits), FID, class
            balance of its samples, interpolation in noise space vs AE latent space;
- cgan:     the same conditioned on a one-hot digit; the classifier checks it draws the digit.

Data: the training images are split into train / validation (stratified, `val_fraction`);
validation labels are used only to plot curves, never to fit or choose anything; the test
set (10,000 images) only for final figures.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vislab.analysis.fid import FeatureModule, FrechetDistance, batched
from vislab.analysis.plots import bar_chart, data_overview, image_grid, plt, training_curves
from vislab.config import CommonConfig, at_least, in_range, one_of, to_dict
from vislab.data import BUILTIN, one_thread, resolve_data_root
from vislab.data.batches import Batches, random_translate, to_float
from vislab.data.splits import stratified_split
from vislab.engine import epoch_generator, fit, load_model_state, log, make_fabric, train_one_epoch, unwrap
from vislab.errors import VislabError
from vislab.models.latent import (ContrastiveEncoder, ConvAutoencoder, DigitClassifier, LatentDiscriminator,
                                  LatentGenerator, ReportHead, StackedClassifier)
from vislab.runs import Run, load_checkpoint

STAGES = ("ae", "fewlabel", "gan", "cgan", "all")
CLASSES = 10


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 3  # epochs of the measuring classifier (all training labels; not a few-label method)
    lr: float = 2e-3  # its Adam learning rate (cosine-decayed per step)
    feature_dim: int = 64  # width of its hidden layer, whose pre-activation is the FID feature space


@dataclass(frozen=True)
class FewLabelConfig:
    labels: int = 50  # labelled training images per draw
    per_class: bool = True  # draw labels / 10 of each digit (else uniformly at random)
    draws: int = 5  # label draws (seeded by seed and draw number) for mean +- std
    head_hidden: list[int] = field(default_factory=lambda: [128, 512])  # the head's sigmoid layers (the report's: 128, 512)
    head_epochs: int = 100  # epochs of the report head per mode (frozen, stacked): 200 in all
    head_batch_size: int = 10  # labelled images per head step
    head_lr: float = 1e-3  # Adam learning rate of the head (and of the encoder when stacked)
    head_max_steps: int = 2000  # cap on head steps (matters only for large label counts in the curve)
    head_val_size: int = 1000  # validation images for the head's per-epoch accuracy curves
    contrastive_epochs: int = 8  # SimCLR epochs over the unlabelled training images
    contrastive_width: int = 16  # channels of the SimCLR encoder's first convolution (x2, x4 after)
    contrastive_batch_size: int = 256  # images per SimCLR step (two views each)
    contrastive_lr: float = 2e-3  # peak Adam learning rate (one-cycle) of the SimCLR encoder
    temperature: float = 0.2  # NT-Xent temperature
    neighbours: int = 10  # k of the kNN graph (cosine similarity) for spreading and prediction
    alpha: float = 0.99  # label-spreading clamping factor (share of a node's label from its neighbours)
    spread_iterations: int = 100  # label-spreading iterations at most (stops earlier when converged)
    curve: list[int] = field(default_factory=lambda: [10, 50, 100, 1000, 0])  # label counts for the curve (0 = all)
    curve_draws: int = 3  # draws per curve point other than `labels` (which uses `draws`) and 'all' (one)


@dataclass(frozen=True)
class GanConfig:
    noise_dim: int = 32  # generator input size (standard normal noise)
    hidden: int = 256  # width of the generator's and discriminator's two hidden layers
    steps: int = 6000  # optimisation steps (one discriminator + one generator update each)
    batch_size: int = 256  # latent codes per step
    lr: float = 2e-4  # Adam learning rate, both networks
    beta1: float = 0.5  # Adam beta1, both networks
    categories: int = 0  # unconditional GAN only: a uniform one-hot of this many categories joins the noise, so the generator can place disconnected modes (no labels used; 0 = Gaussian noise only)
    ema: float = 0.0  # decay of an exponential moving average of the generator's weights, used for sampling (0 = off)
    log_every: int = 50  # steps between rows of the loss table


@dataclass(frozen=True)
class Config(CommonConfig):
    epochs: int = 5  # autoencoder epochs
    batch_size: int = 128  # autoencoder images per step
    stage: str = "all"  # 'ae', 'fewlabel', 'gan', 'cgan' or 'all' (the chain)
    ae_checkpoint: str = ""  # an earlier run folder or .ckpt whose AE (and classifier) later stages reuse
    latent_dim: int = 16  # size of the AE latent code
    ae_width: int = 32  # channels of the AE's first convolution (doubled in the second)
    ae_lr: float = 2e-3  # AE Adam learning rate (cosine-decayed per step)
    ae_loss: str = "bce"  # reconstruction loss: 'bce' (pixel-wise cross-entropy) or 'mse'
    val_fraction: float = 0.1  # share of each digit of the training images held out for validation
    train_limit: int = 0  # use only this many training images, stratified (0 = all): quick looks and tests
    fid_samples: int = 10000  # generated samples per Frechet distance (the real set: all test images)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # the measuring classifier
    fewlabel: FewLabelConfig = field(default_factory=FewLabelConfig)  # few-label classification
    # Measured on MNIST (16-d AE, seed 0): 6,000 plain steps gave FID 427 (1.9x the reconstructions'),
    # 12,000 steps sampled from a 0.999 weight average gave 310 (1.4x). For the cGAN the average
    # raised class accuracy from 96.3 % to 96.8 % at 6,000 steps, and 12,000 steps to 97.6 % (FID
    # 279 -> 253, 160 s on 2 cores).
    gan: GanConfig = field(default_factory=lambda: GanConfig(steps=12000, ema=0.999))  # the latent GAN
    cgan: GanConfig = field(default_factory=lambda: GanConfig(steps=12000, ema=0.999))  # the conditional latent GAN

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.devices > 1 or self.num_nodes > 1:  # fail before any process starts
            raise VislabError("latent runs on one process only (devices=1, num_nodes=1): its GAN and few-label "
                              "stages are hand-written loops with several optimisers that were never made "
                              "distributed; run several seeds or stages side by side instead")
        one_of("stage", self.stage, STAGES)
        one_of("ae_loss", self.ae_loss, ("bce", "mse"))
        at_least("latent_dim", self.latent_dim, 1)
        at_least("ae_width", self.ae_width, 1)
        in_range("val_fraction", self.val_fraction, 0.01, 0.5)
        at_least("fid_samples", self.fid_samples, 2)
        at_least("train_limit", self.train_limit, 0)
        at_least("classifier.epochs", self.classifier.epochs, 1)
        few = self.fewlabel
        at_least("fewlabel.labels", few.labels, 1)
        if few.per_class:
            for count in [few.labels, *[c for c in few.curve if c]]:
                if count % CLASSES:
                    raise VislabError(f"config key 'fewlabel': {count} labels cannot be drawn evenly over "
                                      f"{CLASSES} digits; use a multiple of {CLASSES} or --fewlabel.per-class=false")
        for count in few.curve:
            at_least("fewlabel.curve", count, 0)
        at_least("fewlabel.draws", few.draws, 1)
        at_least("fewlabel.curve_draws", few.curve_draws, 1)
        at_least("fewlabel.head_epochs", few.head_epochs, 1)
        at_least("fewlabel.head_batch_size", few.head_batch_size, 1)
        at_least("fewlabel.contrastive_epochs", few.contrastive_epochs, 1)
        at_least("fewlabel.contrastive_batch_size", few.contrastive_batch_size, 2)
        at_least("fewlabel.neighbours", few.neighbours, 1)
        in_range("fewlabel.alpha", few.alpha, 0.0, 0.9999)
        at_least("fewlabel.temperature", few.temperature, 1e-3)
        for name, gan in (("gan", self.gan), ("cgan", self.cgan)):
            at_least(f"{name}.steps", gan.steps, 1)
            at_least(f"{name}.batch_size", gan.batch_size, 2)
            at_least(f"{name}.noise_dim", gan.noise_dim, 1)
            at_least(f"{name}.log_every", gan.log_every, 1)
            in_range(f"{name}.ema", gan.ema, 0.0, 0.99999)
            at_least(f"{name}.categories", gan.categories, 0)


DEMO = {
    "data_root": BUILTIN, "epochs": 2, "batch_size": 64, "fid_samples": 400,
    "classifier.epochs": 4, "fewlabel.draws": 2, "fewlabel.head_epochs": 20, "fewlabel.contrastive_epochs": 2,
    "fewlabel.contrastive_batch_size": 128, "fewlabel.curve": "[10,50,100]", "fewlabel.curve_draws": 1,
    "fewlabel.head_val_size": 100, "gan.steps": 300, "gan.batch_size": 128, "cgan.steps": 300, "cgan.batch_size": 128,
}


def run_name(config: Config) -> str:
    return f"{config.stage}-z{config.latent_dim}"


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Data:
    """Float images in [0, 1] (N, 1, 28, 28) and labels of the three parts."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_index: torch.Tensor  # (N,) position of each train image in the original training file
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_data(config: Config) -> Data:
    root = resolve_data_root(config.data_root)
    if root == BUILTIN:
        from vislab.data.builtin import digits

        train, test = digits("train"), digits("test")
    else:
        from vislab.data.mnist import load_mnist

        train, test = load_mnist(Path(root), "train"), load_mnist(Path(root), "test")
    keep, held_out = stratified_split(train.labels, config.val_fraction, config.seed)
    if config.train_limit and config.train_limit < len(keep):
        kept, _ = stratified_split(train.labels[keep], 1 - config.train_limit / len(keep), config.seed)
        keep = keep[kept]
    return Data(to_float(train.images[keep]), train.labels[keep], keep,
                to_float(train.images[held_out]), train.labels[held_out],
                to_float(test.images), test.labels)


def draw_labels(labels: torch.Tensor, count: int, seed: int, *, per_class: bool = True) -> torch.Tensor:
    """Sorted indices of `count` examples to label, the same for the same seed: count / 10 of
    each digit when `per_class`, else uniformly at random."""
    if count > len(labels):
        raise VislabError(f"{count} labels asked for, but the training split has only {len(labels)} images; "
                          "lower fewlabel.labels / fewlabel.curve")
    generator = torch.Generator().manual_seed(seed)
    if not per_class:
        return torch.randperm(len(labels), generator=generator)[:count].sort().values
    if count % CLASSES:
        raise VislabError(f"{count} labels cannot be drawn evenly over {CLASSES} digits; "
                          f"use a multiple of {CLASSES} or --fewlabel.per-class=false")
    chosen = []
    for digit in range(CLASSES):
        members = torch.nonzero(labels == digit).squeeze(1)
        if len(members) < count // CLASSES:
            raise VislabError(f"{count // CLASSES} labels of digit {digit} asked for, the training split has "
                              f"{len(members)}; lower fewlabel.labels")
        chosen.append(members[torch.randperm(len(members), generator=generator)[: count // CLASSES]])
    return torch.cat(chosen).sort().values


def draw_seed(config: Config, count: int, draw: int) -> int:
    return config.seed * 1_000_003 + count * 101 + draw


# ---------------------------------------------------------------------------------------------
# small shared helpers


@torch.inference_mode()
def apply(fn, x: torch.Tensor, size: int = 1000) -> torch.Tensor:
    """fn over `x` in chunks (no gradients), concatenated."""
    return torch.cat([fn(chunk) for chunk in batched(x, size)]) if len(x) else torch.empty(0)


def entropy_bits(shares: torch.Tensor) -> float:
    shares = shares[shares > 0]
    return float(-(shares * shares.log2()).sum())


def one_per_digit(labels: torch.Tensor) -> torch.Tensor:
    """Index of the first example of each digit present."""
    return torch.stack([torch.nonzero(labels == d)[0, 0] for d in range(CLASSES) if (labels == d).any()])


# ---------------------------------------------------------------------------------------------
# stage ae: the autoencoder and the measuring classifier


def train_autoencoder(config: Config, data: Data, fabric, run: Run, resume: dict | None) -> ConvAutoencoder:
    model = ConvAutoencoder(latent_dim=config.latent_dim, width=config.ae_width)
    steps_per_epoch = len(data.train_x) // config.batch_size or 1
    optimizer = torch.optim.Adam(model.parameters(), lr=config.ae_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    drop_last = len(data.train_x) >= config.batch_size

    def loss_of(model, x):
        logits = model(x)
        if config.ae_loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, x)
        return F.mse_loss(torch.sigmoid(logits), x)

    def validate(model) -> dict[str, float]:
        recon = apply(lambda x: torch.sigmoid(model(x)), data.val_x, 500)
        logits = torch.logit(recon.clamp(1e-6, 1 - 1e-6))
        loss = (F.binary_cross_entropy_with_logits(logits, data.val_x) if config.ae_loss == "bce"
                else F.mse_loss(recon, data.val_x))
        return {"val_loss": loss.item(), "val_mse": F.mse_loss(recon, data.val_x).item()}

    model, _ = fit(fabric, model, optimizer, run=run, config=to_dict(config), epochs=config.epochs,
                   seed=config.seed, scheduler=scheduler, scheduler_per_step=True, resume=resume,
                   train_batches=lambda epoch: Batches(data.train_x, data.train_y, config.batch_size, shuffle=True,
                                                       seed=config.seed, epoch=epoch, drop_last=drop_last),
                   training_step=lambda model, batch: loss_of(model, batch[0]), validate=validate)
    model = unwrap(model)
    load_model_state(model, load_checkpoint(run.checkpoint_path("best.ckpt"))["model"], "best.ckpt")
    return model.eval()


def train_classifier(config: Config, data: Data, fabric, run: Run) -> DigitClassifier:
    """The measuring instrument: a small CNN on all training labels, shifted +-1 pixel."""
    model = DigitClassifier(feature_dim=config.classifier.feature_dim)
    batch_size = min(128, len(data.train_x))
    steps = config.classifier.epochs * (len(data.train_x) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.classifier.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    wrapped, optimizer = fabric.setup(model, optimizer)
    images = (data.train_x * 255).round().to(torch.uint8)  # shifts run on uint8 batches
    rows = []
    for epoch in range(1, config.classifier.epochs + 1):
        generator = epoch_generator(config.seed, epoch, stream=1)
        batches = Batches(images, data.train_y, batch_size, shuffle=True, seed=config.seed + 1, epoch=epoch,
                          drop_last=True)
        row = train_one_epoch(fabric, wrapped, optimizer,
                              ((to_float(random_translate(x, 1, generator)), y) for x, y in batches),
                              lambda m, b: F.cross_entropy(m(b[0]), b[1]), scheduler=scheduler,
                              description=f"classifier {epoch}")
        model.eval()
        row["val_acc"] = (apply(model, data.val_x).argmax(1) == data.val_y).float().mean().item()
        rows.append({"epoch": epoch, **row})
        log(f"classifier epoch {epoch}/{config.classifier.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_acc {row['val_acc']:.4f}")
    run.table("classifier_epochs", rows)
    return model.eval()


def load_ae_checkpoint(config: Config) -> dict:
    """The AE (and classifier, when saved) of an earlier run, checked against this config."""
    if not config.ae_checkpoint:
        raise VislabError(f"--stage={config.stage} needs --ae-checkpoint RUN_DIR (a run of --stage=ae or "
                          "--stage=all), or run --stage=all")
    path = Path(config.ae_checkpoint)
    state = load_checkpoint(path)
    saved = state.get("config") or {}
    if "model" not in state or "latent_dim" not in saved:
        raise VislabError(f"{path} is not a latent-study checkpoint (no AE weights or config); "
                          "pass a run folder of `vislab run latent`")
    if int(saved["latent_dim"]) != config.latent_dim or int(saved.get("ae_width", 32)) != config.ae_width:
        raise VislabError(f"{path}: its AE has latent_dim {saved['latent_dim']} and ae_width {saved.get('ae_width')}, "
                          f"the config says {config.latent_dim} and {config.ae_width}; "
                          f"pass --latent-dim={saved['latent_dim']} or another checkpoint")
    return state


def evaluate_ae(config: Config, data: Data, ae: ConvAutoencoder, classifier: DigitClassifier, run: Run) -> tuple[dict, FrechetDistance]:
    """Test reconstruction error and figures, classifier accuracy, and the FID set-up with
    its reference points (train vs test images, uniform noise vs test images)."""
    recon = apply(lambda x: ae.decode(ae.encoder(x)), data.test_x)
    picks = one_per_digit(data.test_y)
    run.plot("reconstructions", image_grid(torch.cat([data.test_x[picks], recon[picks]]), nrow=len(picks),
                                           title="test images (top) and their reconstructions (bottom)"))
    test_logits = apply(classifier, data.test_x)
    features = FeatureModule(classifier.features, classifier.num_features)
    fid = FrechetDistance(features, batched(data.test_x))
    generator = torch.Generator().manual_seed(config.seed)
    count = min(config.fid_samples, len(data.train_x))
    figures = {
        "ae_test_mse": F.mse_loss(recon, data.test_x).item(),
        "classifier_test_accuracy": (test_logits.argmax(1) == data.test_y).float().mean().item(),
        "fid_recon": fid(batched(recon)),
        "fid_train_vs_test": fid(batched(data.train_x[torch.randperm(len(data.train_x), generator=generator)[:count]])),
        "fid_noise": fid(batched(torch.rand(count, *data.test_x.shape[1:], generator=generator))),
        "fid_features": f"classifier hidden layer before ReLU ({classifier.num_features}-d)",
        "fid_feature_rank": fid.real_covariance_rank(),
        "fid_real_images": fid.real_count,
    }
    log(f"ae: test mse {figures['ae_test_mse']:.4f}  classifier test acc {figures['classifier_test_accuracy']:.4f}  "
        f"fid recon {figures['fid_recon']:.2f}  train-vs-test {figures['fid_train_vs_test']:.2f}  "
        f"noise {figures['fid_noise']:.1f}  feature covariance rank {figures['fid_feature_rank']}/{classifier.num_features}")
    return figures, fid


# ---------------------------------------------------------------------------------------------
# stage fewlabel


def augment_digits(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random affine warp (rotation +-20 deg, scale +-20 %, shear, shift +-3.5 px) and, for
    half the images, a blanked 9x9 square: (B, 1, 28, 28) float -> the same."""
    batch = x.shape[0]
    uniform = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731
    angle, scale, shear, shift = uniform(batch) * math.radians(20), 1 + 0.2 * uniform(batch), 0.3 * uniform(batch), 0.25 * uniform(2, batch)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False)  # (B, 1, 28, 28)
    centre = torch.randint(0, 28, (2, batch), generator=generator)
    rows, cols = torch.arange(28).view(1, 28, 1), torch.arange(28).view(1, 1, 28)
    erase = (((rows - centre[0].view(-1, 1, 1)).abs() < 5) & ((cols - centre[1].view(-1, 1, 1)).abs() < 5)
             & (torch.rand(batch, 1, 1, generator=generator) < 0.5))
    return out * (~erase).unsqueeze(1).to(x.device)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2B - 1 views."""
    z = F.normalize(torch.cat([first, second]), dim=1)  # (2B, d)
    similarity = z @ z.t() / temperature
    similarity.fill_diagonal_(float("-inf"))
    count = first.shape[0]
    partner = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(z.device)
    return F.cross_entropy(similarity, partner)


def train_contrastive(config: Config, data: Data, fabric) -> ContrastiveEncoder:
    """SimCLR on the unlabelled training images (their labels are never read)."""
    few = config.fewlabel
    model = ContrastiveEncoder(width=few.contrastive_width)
    batch_size = min(few.contrastive_batch_size, len(data.train_x))
    steps = few.contrastive_epochs * (len(data.train_x) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=few.contrastive_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=few.contrastive_lr, total_steps=steps,
                                                    pct_start=0.15)
    wrapped, optimizer = fabric.setup(model, optimizer)
    unlabelled = torch.zeros(len(data.train_x), dtype=torch.long)  # placeholders: no labels here
    for epoch in range(1, few.contrastive_epochs + 1):
        generator = epoch_generator(config.seed, epoch, stream=2)
        batches = Batches(data.train_x, unlabelled, batch_size, shuffle=True, seed=config.seed + 2, epoch=epoch,
                          drop_last=True)
        started = time.perf_counter()
        row = train_one_epoch(
            fabric, wrapped, optimizer, batches,
            lambda m, b: nt_xent(m(augment_digits(b[0], generator)), m(augment_digits(b[0], generator)), few.temperature),
            scheduler=scheduler, description=f"simclr {epoch}")
        log(f"simclr epoch {epoch}/{few.contrastive_epochs}  loss {row['train_loss']:.4f}  "
            f"{time.perf_counter() - started:.1f} s")
    return model.eval()


def knn_indices(query: torch.Tensor, base: torch.Tensor, k: int, *, exclude_self: bool) -> torch.Tensor:
    """(M, k) indices of each query row's k most cosine-similar rows of `base`."""
    query, base = F.normalize(query, dim=1), F.normalize(base, dim=1)
    k = min(k, len(base) - int(exclude_self))
    found = []
    for start in range(0, len(query), 2048):
        similarity = query[start : start + 2048] @ base.t()  # (m, N)
        if exclude_self:
            rows = torch.arange(similarity.shape[0])
            similarity[rows, rows + start] = -math.inf
        found.append(similarity.topk(k, dim=1).indices)
    return torch.cat(found)


def knn_graph(neighbours: torch.Tensor):
    """Symmetric 0/1 adjacency (scipy CSR) of a kNN list (N, k): i ~ j if either lists the other."""
    from scipy import sparse

    count, k = neighbours.shape
    rows = np.repeat(np.arange(count), k)
    graph = sparse.csr_matrix((np.ones(count * k), (rows, neighbours.reshape(-1).numpy())), shape=(count, count))
    return graph.maximum(graph.T).tocsr()


def label_spreading(graph, seeds: torch.Tensor, seed_labels: torch.Tensor, *, classes: int = CLASSES,
                    alpha: float = 0.99, max_iter: int = 100, tol: float = 1e-3) -> torch.Tensor:
    """Zhou et al.'s label spreading on a graph (scipy sparse, N x N), as scikit-learn's
    LabelSpreading computes it: S = D^-1/2 W D^-1/2 (no self-loops, D the column sums or 1),
    F <- alpha S F + (1 - alpha) Y until the change is below `tol`; rows normalised.
    Returns (N, classes) label distributions."""
    from scipy import sparse

    graph = sparse.csr_matrix(graph, dtype=np.float64, copy=True)
    graph.setdiag(0)
    graph.eliminate_zeros()
    degree = np.asarray(graph.sum(axis=0)).ravel()
    scale = 1 / np.sqrt(np.where(degree > 0, degree, 1.0))  # a node nobody lists keeps its own edges (as scipy)
    normalised = sparse.diags(scale) @ graph @ sparse.diags(scale)
    start = np.zeros((graph.shape[0], classes))
    start[seeds.numpy(), seed_labels.numpy()] = 1
    static = (1 - alpha) * start
    current, previous = start, np.zeros_like(start)
    for _ in range(max_iter):
        if np.abs(current - previous).sum() < tol:
            break
        previous, current = current, alpha * (normalised @ current) + static
    total = current.sum(axis=1, keepdims=True)
    total[total == 0] = 1
    return torch.from_numpy(current / total)


class SpreadingClassifier:
    """Label spreading over a kNN graph of the training features, computed once; each label
    draw then costs a few sparse products. Test images take the summed label distributions
    of their k nearest training images (scikit-learn's predict for a kNN kernel)."""

    def __init__(self, train_features: torch.Tensor, test_features: torch.Tensor, *, neighbours: int) -> None:
        self.graph = knn_graph(knn_indices(train_features, train_features, neighbours, exclude_self=True))
        self.test_neighbours = knn_indices(test_features, train_features, neighbours, exclude_self=False)

    def predict(self, seeds: torch.Tensor, seed_labels: torch.Tensor, *, alpha: float, max_iter: int) -> torch.Tensor:
        distributions = label_spreading(self.graph, seeds, seed_labels, alpha=alpha, max_iter=max_iter)
        return distributions[self.test_neighbours].sum(1).argmax(1)


def nearest_neighbour(train_features, seeds, seed_labels, test_features) -> torch.Tensor:
    return seed_labels[knn_indices(test_features, train_features[seeds], 1, exclude_self=False)[:, 0]]


def train_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, *,
               config: FewLabelConfig, seed: int) -> list[float]:
    """Adam on cross-entropy over the labelled examples; validation accuracy after each epoch
    (plotted only: nothing is chosen on it). Returns the curve."""
    with one_thread():  # a 50-image batch through a small MLP / CNN: threads only add spin-waiting
        return _train_head(model, x, y, val_x, val_y, config=config, seed=seed)


def _train_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, *,
                config: FewLabelConfig, seed: int) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=config.head_lr)
    generator = torch.Generator().manual_seed(seed)
    curve, steps = [], 0
    batch_size = min(config.head_batch_size, len(x))
    for _ in range(config.head_epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            chosen = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[chosen]), y[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps >= config.head_max_steps:
                break
        model.eval()
        curve.append((apply(model, val_x).argmax(1) == val_y).float().mean().item())
        if steps >= config.head_max_steps:
            break
    return curve


def fewlabel_stage(config: Config, data: Data, ae: ConvAutoencoder, fabric, run: Run) -> tuple[dict, ContrastiveEncoder]:
    few = config.fewlabel
    started = time.perf_counter()
    latent = {part: apply(ae.encoder, x) for part, x in (("train", data.train_x), ("test", data.test_x))}
    val_pick = torch.randperm(len(data.val_x), generator=torch.Generator().manual_seed(config.seed))[: few.head_val_size]
    val_x, val_y = data.val_x[val_pick], data.val_y[val_pick]
    val_latent = apply(ae.encoder, val_x)
    encoder = train_contrastive(config, data, fabric)
    contrastive = {part: apply(encoder.features, x) for part, x in (("train", data.train_x), ("test", data.test_x))}
    spreaders = {"ae": SpreadingClassifier(latent["train"], latent["test"], neighbours=few.neighbours),
                 "simclr": SpreadingClassifier(contrastive["train"], contrastive["test"], neighbours=few.neighbours)}
    log(f"fewlabel: simclr features and kNN graphs ready after {time.perf_counter() - started:.0f} s")

    def accuracy(predicted: torch.Tensor) -> float:
        return (predicted == data.test_y).float().mean().item()

    def report_head(seeds: torch.Tensor, seed: int, *, stacked: bool) -> tuple[float, list[float]]:
        torch.manual_seed(seed)
        head = ReportHead(in_features=config.latent_dim, hidden=tuple(few.head_hidden))
        if not stacked:
            curve = train_head(head, latent["train"][seeds], data.train_y[seeds], val_latent, val_y, config=few, seed=seed)
            return accuracy(apply(head, latent["test"]).argmax(1)), curve
        model = StackedClassifier(encoder=copy.deepcopy(ae.encoder), head=head)
        curve = train_head(model, data.train_x[seeds], data.train_y[seeds], val_x, val_y, config=few, seed=seed)
        return accuracy(apply(model, data.test_x).argmax(1)), curve

    methods = {
        "report head (frozen AE latents)": lambda s, seed: report_head(s, seed, stacked=False)[0],
        "report head (stacked, fine-tuned)": lambda s, seed: report_head(s, seed, stacked=True)[0],
        "1-NN (AE latents)": lambda s, seed: accuracy(nearest_neighbour(latent["train"], s, data.train_y[s], latent["test"])),
        "label spreading (AE latents)": lambda s, seed: accuracy(spreaders["ae"].predict(
            s, data.train_y[s], alpha=few.alpha, max_iter=few.spread_iterations)),
        "1-NN (SimCLR features)": lambda s, seed: accuracy(nearest_neighbour(contrastive["train"], s, data.train_y[s], contrastive["test"])),
        "label spreading (SimCLR features)": lambda s, seed: accuracy(spreaders["simclr"].predict(
            s, data.train_y[s], alpha=few.alpha, max_iter=few.spread_iterations)),
    }
    best = "label spreading (SimCLR features)"

    # The main experiment: `labels` labels, `draws` draws; the head's curves for the plot.
    draws, results, curves = {}, {name: [] for name in methods}, {"frozen": [], "stacked": []}
    for draw in range(few.draws):
        seed = draw_seed(config, few.labels, draw)
        seeds = draw_labels(data.train_y, few.labels, seed, per_class=few.per_class)
        draws[f"draw_{draw}"] = {"seed": seed, "train_split_index": seeds.tolist(),
                                 "original_train_index": data.train_index[seeds].tolist()}
        for mode, stacked in (("frozen", False), ("stacked", True)):
            acc, curve = report_head(seeds, seed, stacked=stacked)
            curves[mode].append(curve)
            results[f"report head ({'stacked, fine-tuned' if stacked else 'frozen AE latents'})"].append(acc)
        for name, method in methods.items():
            if not name.startswith("report head"):
                results[name].append(method(seeds, seed))
        log(f"fewlabel draw {draw + 1}/{few.draws}: " + "  ".join(f"{name} {values[-1]:.4f}" for name, values in results.items()))
    run.write_json("label_draws.json", draws)
    rows = [{"method": name, "labels": few.labels, "draws": len(values), "mean_accuracy": float(np.mean(values)),
             "std_accuracy": float(np.std(values)), "accuracies": " ".join(f"{v:.4f}" for v in values)}
            for name, values in results.items()]
    run.table("fewlabel_methods", rows)
    run.plot("fewlabel_methods", bar_chart({r["method"]: r["mean_accuracy"] for r in rows}, ylabel="test accuracy",
                                           errors={r["method"]: r["std_accuracy"] for r in rows},
                                           title=f"{few.labels} labels, mean +- std over {few.draws} draws"))
    run.plot("head_accuracy_curves", _head_curves(curves, few.labels))

    # Accuracy against the number of labels: the report's head and the best method.
    curve_rows = []
    for count in few.curve:
        count = count or len(data.train_y)
        if count == few.labels:
            head_values, best_values = results["report head (frozen AE latents)"], results[best]
        else:
            head_values, best_values = [], []
            for draw in range(1 if count == len(data.train_y) else few.curve_draws):
                seed = draw_seed(config, count, draw)
                seeds = draw_labels(data.train_y, count, seed, per_class=few.per_class and count < len(data.train_y))
                head_values.append(methods["report head (frozen AE latents)"](seeds, seed))
                best_values.append(methods[best](seeds, seed))
        for name, values in (("report head (frozen AE latents)", head_values), (best, best_values)):
            curve_rows.append({"method": name, "labels": count, "draws": len(values),
                               "mean_accuracy": float(np.mean(values)), "std_accuracy": float(np.std(values))})
        log(f"fewlabel curve: {count} labels  report head {np.mean(head_values):.4f}  best {np.mean(best_values):.4f}")
    run.table("fewlabel_curve", curve_rows)
    run.plot("accuracy_vs_labels", _label_curve(curve_rows))

    head, stacked, top = (results["report head (frozen AE latents)"], results["report head (stacked, fine-tuned)"],
                          results[best])
    return {
        "fewlabel_accuracy": float(np.mean(top)),
        "fewlabel_accuracy_std": float(np.std(top)),
        "fewlabel_labels": few.labels,
        "fewlabel_draws": few.draws,
        "fewlabel_method": best,
        "report_head_accuracy": float(np.mean(head)),
        "report_head_accuracy_std": float(np.std(head)),
        "report_head_finetuned_accuracy": float(np.mean(stacked)),
        "report_head_finetuned_accuracy_std": float(np.std(stacked)),
        "fewlabel_seconds": round(time.perf_counter() - started, 1),
    }, encoder


def _head_curves(curves: dict[str, list[list[float]]], labels: int):
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for mode, label in (("frozen", "head on frozen AE latents"), ("stacked", "head stacked on encoder, fine-tuned")):
        length = min(len(c) for c in curves[mode])
        values = np.array([c[:length] for c in curves[mode]])
        epochs = np.arange(1, length + 1)
        axis.plot(epochs, values.mean(0), label=label)
        axis.fill_between(epochs, values.min(0), values.max(0), alpha=0.2)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.set_title(f"report head, {labels} labels (mean, min-max over {len(curves['frozen'])} draws)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def _label_curve(rows: list[dict]):
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows):
        part = [r for r in rows if r["method"] == method]
        axis.errorbar([r["labels"] for r in part], [r["mean_accuracy"] for r in part],
                      yerr=[r["std_accuracy"] for r in part], marker="o", capsize=3, label=method)
    axis.set_xscale("log")
    axis.set_xlabel("labelled training images")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# stages gan and cgan


class LatentScaler:
    """Standardises latent codes per dimension (the GANs work on standardised codes)."""

    def __init__(self, codes: torch.Tensor) -> None:
        self.mean, self.std = codes.mean(0), codes.std(0).clamp_min(1e-6)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.mean) / self.std

    def inverse(self, codes: torch.Tensor) -> torch.Tensor:
        return codes * self.std + self.mean


def train_gan(config: GanConfig, codes: torch.Tensor, labels: torch.Tensor | None, *, seed: int, name: str,
              latent_dim: int) -> tuple[LatentGenerator, list[dict]]:
    """Non-saturating GAN on standardised latent codes, written out: one discriminator and
    one generator Adam step per iteration. `labels` given: conditional on the digit."""
    with one_thread():  # MLPs on 256 x 16 batches: threads only add spin-waiting
        return _train_gan(config, codes, labels, seed=seed, name=name, latent_dim=latent_dim)


def _train_gan(config: GanConfig, codes: torch.Tensor, labels: torch.Tensor | None, *, seed: int, name: str,
               latent_dim: int) -> tuple[LatentGenerator, list[dict]]:
    conditional = labels is not None
    inputs = CLASSES if conditional else config.categories  # one-hot inputs of the generator
    torch.manual_seed(seed)
    generator = LatentGenerator(noise_dim=config.noise_dim, latent_dim=latent_dim, hidden=config.hidden, classes=inputs)
    discriminator = LatentDiscriminator(latent_dim=latent_dim, hidden=config.hidden, classes=CLASSES if conditional else 0)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    averaged = (torch.optim.swa_utils.AveragedModel(generator, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema))
                if config.ema else None)
    draw = torch.Generator().manual_seed(seed)
    batch = min(config.batch_size, len(codes))
    rows, sums, started = [], {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}, time.perf_counter()
    for step in range(1, config.steps + 1):
        chosen = torch.randint(0, len(codes), (batch,), generator=draw)
        real = codes[chosen]
        real_labels = labels[chosen] if labels is not None else None
        fake_labels = torch.randint(0, inputs, (batch,), generator=draw) if inputs else None
        fake = generator(torch.randn(batch, config.noise_dim, generator=draw), fake_labels)
        fake_labels = fake_labels if conditional else None  # categories are the generator's secret

        real_logit, fake_logit = discriminator(real, real_labels), discriminator(fake.detach(), fake_labels)
        d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        fooled = discriminator(fake, fake_labels)
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))  # non-saturating
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if averaged is not None:
            averaged.update_parameters(generator)

        sums["d_loss"] += d_loss.item()
        sums["g_loss"] += g_loss.item()
        sums["d_real"] += torch.sigmoid(real_logit).mean().item()
        sums["d_fake"] += torch.sigmoid(fake_logit).mean().item()
        if not math.isfinite(sums["d_loss"] + sums["g_loss"]):
            raise VislabError(f"{name}: the losses became NaN at step {step}; lower --{name}.lr")
        if step % config.log_every == 0 or step == config.steps:
            count = step - (rows[-1]["step"] if rows else 0)
            rows.append({"step": step, **{k: v / count for k, v in sums.items()}})
            sums = dict.fromkeys(sums, 0.0)
        if step % max(1, config.steps // 5) == 0 and rows:
            log(f"{name} step {step}/{config.steps}  d_loss {rows[-1]['d_loss']:.3f}  g_loss {rows[-1]['g_loss']:.3f}  "
                f"{time.perf_counter() - started:.0f} s")
    if averaged is not None:
        generator.load_state_dict(averaged.module.state_dict())
    return generator.eval(), rows


def _loss_plot(rows: list[dict], title: str):
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = [r["step"] for r in rows]
    for key in ("d_loss", "g_loss"):
        axes[0].plot(steps, [r[key] for r in rows], label=key)
    for key in ("d_real", "d_fake"):
        axes[1].plot(steps, [r[key] for r in rows], label=f"D(x) on {key[2:]} codes")
    axes[0].set_ylabel("loss (mean over the logged steps)")
    axes[1].set_ylabel("discriminator output")
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def draw_noise(config: GanConfig, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(count, noise_dim) Gaussian noise and, when the GAN has categories, a uniform category each."""
    draw = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, config.noise_dim, generator=draw)
    return noise, torch.randint(0, config.categories, (count,), generator=draw) if config.categories else None


@torch.inference_mode()
def generate(generator: LatentGenerator, scaler: LatentScaler, ae: ConvAutoencoder, noise: torch.Tensor,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """Noise (N, noise_dim) [+ labels] -> decoded images (N, 1, 28, 28) in [0, 1]."""
    out = []
    for start in range(0, len(noise), 1000):
        part = labels[start : start + 1000] if labels is not None else None
        out.append(ae.decode(scaler.inverse(generator(noise[start : start + 1000], part))))
    return torch.cat(out)


def gan_stage(config: Config, data: Data, ae: ConvAutoencoder, classifier: DigitClassifier, fid: FrechetDistance,
              run: Run) -> tuple[dict, dict]:
    started = time.perf_counter()
    codes = apply(ae.encoder, data.train_x)
    scaler = LatentScaler(codes)
    generator, rows = train_gan(config.gan, scaler(codes), None, seed=config.seed + 11, name="gan",
                                latent_dim=config.latent_dim)
    run.table("gan_losses", rows)
    run.plot("gan_losses", _loss_plot(rows, "latent GAN"))
    noise, categories = draw_noise(config.gan, config.fid_samples, config.seed + 12)
    samples = generate(generator, scaler, ae, noise, categories)
    run.plot("gan_samples", image_grid(samples[:64], nrow=8, title="latent GAN samples, decoded"))
    predicted = apply(classifier, samples).argmax(1)
    shares = torch.bincount(predicted, minlength=CLASSES).double() / len(predicted)
    run.table("gan_class_shares", [{"digit": d, "share": float(shares[d])} for d in range(CLASSES)])
    run.plot("gan_class_shares", bar_chart({str(d): float(shares[d]) for d in range(CLASSES)},
                                           ylabel="share of samples", title="classifier's digit for GAN samples"))

    # Interpolation: between two generated samples in noise space, and two real test images in AE latent space.
    steps = torch.linspace(0, 1, 10).view(-1, 1)
    ends, category = draw_noise(config.gan, 2, config.seed + 13)
    same_category = category[:1].expand(len(steps)) if category is not None else None  # noise moves, category stays
    noise_row = generate(generator, scaler, ae, ends[0] * (1 - steps) + ends[1] * steps, same_category)
    picks = one_per_digit(data.test_y)[[3, 8]] if len(one_per_digit(data.test_y)) == CLASSES else torch.tensor([0, 1])
    with torch.inference_mode():
        a, b = ae.encoder(data.test_x[picks])
        latent_row = ae.decode(a * (1 - steps) + b * steps)
    run.plot("interpolation", image_grid(torch.cat([noise_row, latent_row]), nrow=10,
                                         title="top: generator noise space; bottom: AE latent space (two test images)"))
    figures = {
        "fid_gan": fid(batched(samples)),
        "gan_class_entropy": entropy_bits(shares),
        "gan_digits_present": int((shares > 0).sum()),
        "gan_seconds": round(time.perf_counter() - started, 1),
    }
    log(f"gan: fid {figures['fid_gan']:.2f}  class entropy {figures['gan_class_entropy']:.3f} bits "
        f"(max {math.log2(CLASSES):.3f})  {figures['gan_seconds']:.0f} s")
    return figures, {"generator": generator.state_dict(), "latent_mean": scaler.mean, "latent_std": scaler.std}


def cgan_stage(config: Config, data: Data, ae: ConvAutoencoder, classifier: DigitClassifier, fid: FrechetDistance,
               run: Run) -> tuple[dict, dict]:
    started = time.perf_counter()
    codes = apply(ae.encoder, data.train_x)
    scaler = LatentScaler(codes)
    generator, rows = train_gan(config.cgan, scaler(codes), data.train_y, seed=config.seed + 21, name="cgan",
                                latent_dim=config.latent_dim)
    run.table("cgan_losses", rows)
    run.plot("cgan_losses", _loss_plot(rows, "conditional latent GAN"))
    draw = torch.Generator().manual_seed(config.seed + 22)
    requested = torch.arange(config.fid_samples) % CLASSES
    samples = generate(generator, scaler, ae, torch.randn(config.fid_samples, config.cgan.noise_dim, generator=draw), requested)
    per_row = 8
    grid_labels = torch.arange(CLASSES).repeat_interleave(per_row)
    grid = generate(generator, scaler, ae, torch.randn(len(grid_labels), config.cgan.noise_dim, generator=draw), grid_labels)
    run.plot("cgan_samples", image_grid(grid, nrow=per_row, title="conditional latent GAN: row d asks for digit d"))
    predicted = apply(classifier, samples).argmax(1)
    per_digit = {str(d): (predicted[requested == d] == d).float().mean().item() for d in range(CLASSES)}
    run.table("cgan_class_accuracy", [{"digit": d, "accuracy": v} for d, v in per_digit.items()])
    figures = {
        "fid_cgan": fid(batched(samples)),
        "cgan_class_accuracy": (predicted == requested).float().mean().item(),
        "cgan_seconds": round(time.perf_counter() - started, 1),
    }
    log(f"cgan: fid {figures['fid_cgan']:.2f}  class accuracy {figures['cgan_class_accuracy']:.4f}  "
        f"{figures['cgan_seconds']:.0f} s")
    return figures, {"cgenerator": generator.state_dict()}


# ---------------------------------------------------------------------------------------------
# the chain


def run(config: Config, run: Run, resume: dict | None = None) -> dict:
    fabric = make_fabric(config)
    started = time.perf_counter()
    saved = load_ae_checkpoint(config) if config.stage not in ("ae", "all") else None  # fail before any work
    data = load_data(config)
    if config.stage in ("fewlabel", "all"):  # an impossible label count fails now, not after the AE
        for count in {config.fewlabel.labels, *[c for c in config.fewlabel.curve if c]}:
            draw_labels(data.train_y, count, config.seed, per_class=config.fewlabel.per_class)
    data_overview(run, {"train": (data.train_x, data.train_y), "validation": (data.val_x, data.val_y),
                        "test": (data.test_x, data.test_y)}, [str(d) for d in range(CLASSES)], title="digits",
                  seed=config.seed)
    log(f"latent: stage {config.stage}, {len(data.train_x)} train / {len(data.val_x)} validation / "
        f"{len(data.test_x)} test images, latent size {config.latent_dim}")
    state: dict = {"config": to_dict(config)}
    if config.stage in ("ae", "all"):
        ae = train_autoencoder(config, data, fabric, run, resume)
        classifier = train_classifier(config, data, fabric, run)
        plot_rows = run.metrics()
        run.plot("ae_curves", training_curves(plot_rows, title=f"conv AE, latent size {config.latent_dim}"))
    else:
        ae = ConvAutoencoder(latent_dim=config.latent_dim, width=config.ae_width)
        load_model_state(ae, saved["model"], f"AE checkpoint {config.ae_checkpoint}")
        ae.eval()
        if "classifier" in saved:
            classifier = DigitClassifier(feature_dim=config.classifier.feature_dim)
            load_model_state(classifier, saved["classifier"], f"classifier in {config.ae_checkpoint}")
            classifier.eval()
        else:
            classifier = train_classifier(config, data, fabric, run)
    state |= {"model": ae.state_dict(), "classifier": classifier.state_dict()}
    summary, fid = evaluate_ae(config, data, ae, classifier, run)
    summary["ae_seconds"] = round(time.perf_counter() - started, 1)
    if config.stage in ("fewlabel", "all"):
        figures, encoder = fewlabel_stage(config, data, ae, fabric, run)
        summary |= figures
        state["contrastive_encoder"] = encoder.state_dict()
    for stage, work in (("gan", gan_stage), ("cgan", cgan_stage)):
        if config.stage in (stage, "all"):
            figures, weights = work(config, data, ae, classifier, fid, run)
            summary |= figures
            state |= weights
    run.save_checkpoint("best.ckpt", state)  # the fit's AE-only best.ckpt, completed with the other parts
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    summary["data"] = "builtin (scikit-learn digits, 28x28)" if config.data_root == BUILTIN else "mnist"
    return summary


def evaluate(config: Config, checkpoint: dict, run: Run) -> dict:
    """Test figures from a saved run: AE error and recon FID, and the GANs' figures when saved."""
    make_fabric(config)
    data = load_data(config)
    data_overview(run, {"train": (data.train_x, data.train_y), "validation": (data.val_x, data.val_y),
                        "test": (data.test_x, data.test_y)}, [str(d) for d in range(CLASSES)], title="digits",
                  seed=config.seed)
    ae = ConvAutoencoder(latent_dim=config.latent_dim, width=config.ae_width)
    load_model_state(ae, checkpoint["model"], "the checkpoint")
    ae.eval()
    if "classifier" not in checkpoint:
        raise VislabError("the checkpoint holds no classifier (an interrupted run?); pass a finished run's best.ckpt")
    classifier = DigitClassifier(feature_dim=config.classifier.feature_dim)
    load_model_state(classifier, checkpoint["classifier"], "the checkpoint's classifier")
    classifier.eval()
    summary, fid = evaluate_ae(config, data, ae, classifier, run)
    scaler = LatentScaler(apply(ae.encoder, data.train_x))
    for key, gan, conditional in (("generator", config.gan, False), ("cgenerator", config.cgan, True)):
        if key not in checkpoint:
            continue
        generator = LatentGenerator(noise_dim=gan.noise_dim, latent_dim=config.latent_dim, hidden=gan.hidden,
                                    classes=CLASSES if conditional else gan.categories)
        load_model_state(generator, checkpoint[key], f"the checkpoint's {key}")
        generator.eval()
        noise, categories = draw_noise(gan, config.fid_samples, config.seed + 99)
        requested = torch.arange(config.fid_samples) % CLASSES if conditional else None
        samples = generate(generator, scaler, ae, noise, requested if conditional else categories)
        predicted = apply(classifier, samples).argmax(1)
        if conditional:
            summary |= {"fid_cgan": fid(batched(samples)), "cgan_class_accuracy": (predicted == requested).float().mean().item()}
        else:
            shares = torch.bincount(predicted, minlength=CLASSES).double() / len(predicted)
            summary |= {"fid_gan": fid(batched(samples)), "gan_class_entropy": entropy_bits(shares)}
    return summary
