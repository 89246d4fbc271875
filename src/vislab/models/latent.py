"""Models of the latent study: a convolutional autoencoder on 28x28 digits, the report's
few-label head, latent GANs (plain and conditional), a contrastive encoder and the small
MNIST classifier that serves as the feature extractor of the Frechet distance.

Plain `nn.Module`s with keyword-only constructors; they import only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vislab.models.registry import register_model

IMAGE_SHAPE = (1, 28, 28)


class Encoder(nn.Module):
    """(B, 1, 28, 28) in [0, 1] -> (B, latent_dim)."""

    def __init__(self, *, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),  # (B, 2w, 7, 7)
            nn.Flatten(),
        )
        self.to_latent = nn.Linear(2 * width * 7 * 7, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(x))


class Decoder(nn.Module):
    """(B, latent_dim) -> (B, 1, 28, 28) logits (sigmoid gives pixels in [0, 1])."""

    def __init__(self, *, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, 2 * width * 7 * 7), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, 14, 14)
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # (B, 1, 28, 28)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.from_latent(z).view(-1, 2 * self.width, 7, 7))


class ConvAutoencoder(nn.Module):
    """Encoder + decoder; forward returns reconstruction logits (B, 1, 28, 28)."""

    def __init__(self, *, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim=latent_dim, width=width)
        self.decoder = Decoder(latent_dim=latent_dim, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))


class ReportHead(nn.Module):
    """The report's best few-label head: FC 128 sigmoid -> 512 sigmoid -> 10 (softmax in the loss)."""

    def __init__(self, *, in_features: int = 16, hidden: tuple[int, ...] = (128, 512), classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.Sigmoid()]
            width = size
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, classes) logits


class StackedClassifier(nn.Module):
    """The head stacked on the AE's encoder, for end-to-end fine-tuning: image -> logits."""

    def __init__(self, *, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _mlp(sizes: list[int], *, final_activation: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


class LatentGenerator(nn.Module):
    """Noise (B, noise_dim) [+ one-hot class (B, classes)] -> latent code (B, latent_dim)."""

    def __init__(self, *, noise_dim: int = 32, latent_dim: int = 16, hidden: int = 256, classes: int = 0) -> None:
        super().__init__()
        self.noise_dim, self.classes = noise_dim, classes
        self.net = _mlp([noise_dim + classes, hidden, hidden, latent_dim])

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            noise = torch.cat([noise, F.one_hot(labels, self.classes).float()], dim=1)
        return self.net(noise)


class LatentDiscriminator(nn.Module):
    """Latent code (B, latent_dim) [+ class (B,)] -> real/fake logit (B,).

    Conditional (classes > 0): the one-hot digit is concatenated to the input and, as in
    Miyato & Koyama's projection discriminator, its embedding is dotted with the last hidden
    features, so the logit = w . h + e_y . h. Concatenation alone learnt the condition slowly.
    """

    def __init__(self, *, latent_dim: int = 16, hidden: int = 256, classes: int = 0) -> None:
        super().__init__()
        self.classes = classes
        self.body = nn.Sequential(_mlp([latent_dim + classes, hidden, hidden]), nn.LeakyReLU(0.2))
        self.out = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(classes, hidden) if classes else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            z = torch.cat([z, F.one_hot(labels, self.classes).float()], dim=1)
        features = self.body(z)  # (B, hidden)
        logit = self.out(features).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * features).sum(1)
        return logit


class ContrastiveEncoder(nn.Module):
    """A small CNN trained with a SimCLR loss. forward: (B, 1, 28, 28) -> the projection
    (B, projection_dim) the loss is computed on; `features` -> the representation
    (B, feature_dim) used afterwards (the projection head is thrown away)."""

    def __init__(self, *, width: int = 32, feature_dim: int = 128, projection_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),  # (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),  # (B, 4w, 4, 4)
            nn.Flatten(), nn.Linear(4 * width * 16, feature_dim),
        )
        self.projection = nn.Sequential(nn.BatchNorm1d(feature_dim), nn.ReLU(), nn.Linear(feature_dim, projection_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.body(x))


class DigitClassifier(nn.Module):
    """A small MNIST CNN (>= 99 % test accuracy in a few epochs). `features` returns the
    pre-activation of its hidden layer (B, feature_dim): the Frechet-distance features."""

    def __init__(self, *, width: int = 32, feature_dim: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.num_features = feature_dim  # read by torchmetrics' FID for a custom feature module
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 7, 7)
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * width * 49, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.25), nn.Linear(feature_dim, classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# --- registered variants ---------------------------------------------------------------------


@register_model(study="latent", input_shape=IMAGE_SHAPE)
def conv_ae(latent_dim: int = 16, width: int = 32) -> nn.Module:
    """Convolutional autoencoder, 28x28 -> latent_dim -> 28x28."""
    return ConvAutoencoder(latent_dim=latent_dim, width=width)


@register_model(study="latent", input_shape=(16,))
def report_head(in_features: int = 16) -> nn.Module:
    """The report's head: FC 128 sigmoid -> 512 sigmoid -> 10."""
    return ReportHead(in_features=in_features)


@register_model(study="latent", input_shape=(32,))
def latent_generator(noise_dim: int = 32, latent_dim: int = 16) -> nn.Module:
    """MLP generator: noise -> AE latent code."""
    return LatentGenerator(noise_dim=noise_dim, latent_dim=latent_dim)


@register_model(study="latent", input_shape=(16,))
def latent_discriminator(latent_dim: int = 16) -> nn.Module:
    """MLP discriminator on AE latent codes."""
    return LatentDiscriminator(latent_dim=latent_dim)


@register_model(study="latent", input_shape=(32,),
                example=lambda batch: (torch.randn(batch, 32), torch.randint(0, 10, (batch,))))
def latent_cgenerator(noise_dim: int = 32, latent_dim: int = 16) -> nn.Module:
    """Conditional MLP generator: noise + one-hot digit -> AE latent code."""
    return LatentGenerator(noise_dim=noise_dim, latent_dim=latent_dim, classes=10)


@register_model(study="latent", input_shape=(16,),
                example=lambda batch: (torch.randn(batch, 16), torch.randint(0, 10, (batch,))))
def latent_cdiscriminator(latent_dim: int = 16) -> nn.Module:
    """Conditional MLP discriminator: latent code + one-hot digit -> real/fake logit."""
    return LatentDiscriminator(latent_dim=latent_dim, classes=10)


@register_model(study="latent", input_shape=IMAGE_SHAPE)
def contrastive_encoder(width: int = 32, feature_dim: int = 128) -> nn.Module:
    """Small CNN for SimCLR-style augmentation-invariant features."""
    return ContrastiveEncoder(width=width, feature_dim=feature_dim)


@register_model(study="latent", input_shape=IMAGE_SHAPE)
def digit_classifier(width: int = 32, feature_dim: int = 64) -> nn.Module:
    """Small MNIST CNN; its hidden pre-activation is the FID feature space."""
    return DigitClassifier(width=width, feature_dim=feature_dim)
