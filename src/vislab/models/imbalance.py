"""Models of the imbalance study (car / truck / cat, 3x32x32).

- `apml_simple`: the course's baseline architecture (APML 2020 Ex1 `SimpleModel`, 66,171
  parameters), with the layer names of the course checkpoint so that `pre_trained.ckpt`
  loads into it unchanged. It expects inputs normalised to [-1, 1].
- `imb_resnet`: a small residual net (airbench-like stem and three conv-pool-BN stages with a
  residual pair of 3x3 convs each), fast enough to train on a 2-core CPU in minutes.

`Normalized` puts the input normalisation inside the model, so that attacks and users feed
images in [0, 1] and an epsilon means pixels. Every model exposes `features(x)` (the
penultimate representation) and `head` (the last linear layer), used by SMOTE-on-features.
"""

from __future__ import annotations

import torch
from torch import nn

from vislab.models.registry import register_model

IMAGE_SHAPE = (3, 32, 32)


class SimpleModel(nn.Module):
    """conv5x5 3->16, pool, conv5x5 16->16, pool, fc 400-120-84-3 with ReLU and dropout 0.5."""

    def __init__(self, *, num_classes: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5)
        self.conv2 = nn.Conv2d(16, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.dropout = nn.Dropout(dropout)

    @property
    def head(self) -> nn.Linear:
        return self.fc3

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, 84)
        x = self.pool(torch.relu(self.conv1(x)))  # (B, 16, 14, 14)
        x = self.pool(torch.relu(self.conv2(x)))  # (B, 16, 5, 5)
        x = self.dropout(torch.relu(self.fc1(x.flatten(1))))
        return self.dropout(torch.relu(self.fc2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.features(x))


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class _Stage(nn.Module):
    """conv c_in->c_out, max-pool 2, then a residual pair of 3x3 convs: halves the size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                  nn.BatchNorm2d(c_out), nn.GELU())
        self.residual = nn.Sequential(_conv_bn(c_out, c_out), _conv_bn(c_out, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.residual(x)


class SmallResNet(nn.Module):
    """Stem conv 3->w0, three stages (w1, w2, w3) each halving the size, global max-pool, linear."""

    def __init__(self, *, widths: tuple[int, int, int, int] = (24, 32, 64, 128), num_classes: int = 3) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.body = nn.Sequential(_conv_bn(3, w0), _Stage(w0, w1), _Stage(w1, w2), _Stage(w2, w3))  # (B, w3, 4, 4)
        self.linear = nn.Linear(w3, num_classes)

    @property
    def head(self) -> nn.Linear:
        return self.linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, w3)
        return self.body(x).amax(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class Normalized(nn.Module):
    """`net` applied to (x - mean) / std: inputs stay in [0, 1], so attack budgets are pixels.

    `logit_bias` (zeros unless set) is added to the logits: a post-hoc logit adjustment
    travels with the model, so evaluation and attacks see the same decision rule. None of the
    buffers is saved: `state_dict()` of the wrapper is `net`'s under 'net.'.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("logit_bias", torch.zeros(net.head.out_features), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) in [0, 1] -> (B, classes)
        return self.net((x - self.mean) / self.std) + self.logit_bias


@register_model(study="imbalance", input_shape=IMAGE_SHAPE)
def apml_simple(**kwargs) -> nn.Module:
    """The APML Ex1 course baseline (SimpleModel): 66,171 parameters, inputs in [-1, 1]."""
    return SimpleModel(**kwargs)


@register_model(study="imbalance", input_shape=IMAGE_SHAPE)
def imb_resnet(**kwargs) -> nn.Module:
    """Small residual net (widths 24/32/64/128) for the imbalance study."""
    return SmallResNet(**kwargs)


@register_model(study="imbalance", input_shape=IMAGE_SHAPE)
def imb_resnet_small(**kwargs) -> nn.Module:
    """Narrow small residual net (widths 16/16/32/64): about a third of imb_resnet's compute."""
    return SmallResNet(widths=(16, 16, 32, 64), **kwargs)


@register_model(study="imbalance", input_shape=IMAGE_SHAPE)
def imb_resnet_wide(**kwargs) -> nn.Module:
    """Wider small residual net (widths 32/64/128/256) for the imbalance study."""
    return SmallResNet(widths=(32, 64, 128, 256), **kwargs)
