"""CIFAR-10 models of the cnn study: the PyTorch-tutorial net and its named variants.

Every variant is registered under the report's name (Q1_1 ... Q1_25, Q2_1, Q2_2) and has
exactly the report's number of trainable parameters; `tests/test_cnn_models.py` checks each.

All variants are one module, `ConvNet`, configured by a layer list: `Conv(out, kernel, pad)`
entries and `POOL` (2x2 max-pool), then fully connected layers of the given hidden widths.
The report (seeds/004) gives full layer tables only for Q1_11 and Q1_19; every other layout
was derived from its one-line description by an exhaustive search over the consistent layouts
(channels, kernels, padding, pool positions, FC widths) for the exact parameter count. Each
variant's docstring gives its layout, the reasoning and what stays ambiguous. Counts in the
docstrings are checked by the tests.

Besides the report's nets: `MLP_control` (no spatial prior, for the pixel-permutation runs)
and `ResNet_fast` (an airbench / ResNet-9 style residual net, channels_last friendly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vislab.models.registry import register_model

CIFAR_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class Conv:
    """One convolution of a `ConvNet` layout: `out` channels, `kernel` x `kernel`, `pad`."""

    out: int
    kernel: int = 3
    pad: int = 0


POOL = "pool"  # a 2x2 max-pool in a `ConvNet` layout

Layer = Conv | str


def conv_stack(channels: Sequence[int], kernel: int = 3, pad: int = 0,
               pool_after: Sequence[int] = ()) -> list[Layer]:
    """A layout of equal-kernel convolutions, with a max-pool after the 1-based `pool_after`."""
    layers: list[Layer] = []
    for index, out in enumerate(channels, start=1):
        layers.append(Conv(out, kernel, pad))
        if index in pool_after:
            layers.append(POOL)
    return layers


def vgg_stages(stages: Sequence[tuple[int, Sequence[int]]]) -> list[Layer]:
    """A VGG-style layout: per stage `(channels, kernels)`, same-padded convs then a max-pool."""
    layers: list[Layer] = []
    for channels, kernels in stages:
        layers += [Conv(channels, k, k // 2) for k in kernels]
        layers.append(POOL)
    return layers


class ConvNet(nn.Module):
    """Convolutions and max-pools from `layers`, then fully connected layers of `hidden` widths.

    With `nonlinear=False` the ReLUs are left out (the pools are left to `layers`): the
    linear-only nets of the report's question 2.
    """

    def __init__(self, *, layers: Sequence[Layer], hidden: Sequence[int] = (),
                 num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 nonlinear: bool = True) -> None:
        super().__init__()
        features: list[nn.Module] = []
        channels, size = in_channels, image_size
        for layer in layers:
            if layer == POOL:
                features.append(nn.MaxPool2d(2))
                size //= 2
            elif isinstance(layer, Conv):
                features.append(nn.Conv2d(channels, layer.out, layer.kernel, padding=layer.pad))
                if nonlinear:
                    features.append(nn.ReLU())
                channels, size = layer.out, size - layer.kernel + 1 + 2 * layer.pad
            else:
                raise ValueError(f"unknown layer {layer!r}: use Conv(...) or POOL")
            if size < 1:
                raise ValueError(f"layout {list(layers)} shrinks a {image_size}px image to nothing")
        features.append(nn.Flatten())
        self.features = nn.Sequential(*features)
        widths = (channels * size * size, *hidden)
        classifier: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            classifier.append(nn.Linear(width_in, width_out))
            if nonlinear:
                classifier.append(nn.ReLU())
        classifier.append(nn.Linear(widths[-1], num_classes))
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        return self.classifier(self.features(x))


class TutorialNet(ConvNet):
    """conv 3->c1 5x5, max-pool 2, conv c1->c2 5x5, max-pool 2, then fully connected layers.

    With the defaults this is the classic PyTorch-tutorial CIFAR-10 net (62,006 parameters).
    """

    def __init__(self, *, conv_channels: tuple[int, int] = (6, 16),
                 hidden: Sequence[int] = (120, 84), num_classes: int = 10,
                 pool: bool = True, nonlinear: bool = True) -> None:
        c1, c2 = conv_channels
        pool_after = (1, 2) if pool else ()
        super().__init__(layers=conv_stack((c1, c2), kernel=5, pool_after=pool_after),
                         hidden=hidden, num_classes=num_classes, nonlinear=nonlinear)


def cnn_model(fn):
    """Register a cnn-study CIFAR-10 builder under its function name."""
    return register_model(study="cnn", input_shape=CIFAR_SHAPE)(fn)


# --- Q1_1 ... Q1_18: small changes to the tutorial net -------------------------------------

@cnn_model
def Q1_1(**kwargs) -> nn.Module:
    """The PyTorch-tutorial CIFAR-10 net: 62,006 parameters.

    conv 3->6 5x5, pool, conv 6->16 5x5, pool, FC 400-120-84-10.
    """
    return TutorialNet(**kwargs)


@cnn_model
def Q1_2(**kwargs) -> nn.Module:
    """Tutorial net without the 120-wide FC layer: FC 400-84-10, 37,406 parameters.

    "We removed a fully connected layer": removing the 120 layer gives the count exactly
    (removing the 84 layer gives 400-120-10, 52,202, which is Q1_7).
    """
    return TutorialNet(hidden=(84,), **kwargs)


@cnn_model
def Q1_3(**kwargs) -> nn.Module:
    """Tutorial net with 3x3 instead of 5x5 kernels: FC 576-120-84-10, 81,302 parameters.

    conv 3->6 3x3 (30px), pool (15), conv 6->16 3x3 (13), pool (6): 16*6*6 = 576 features.
    """
    return ConvNet(layers=conv_stack((6, 16), kernel=3, pool_after=(1, 2)),
                   hidden=(120, 84), **kwargs)


@cnn_model
def Q1_4(**kwargs) -> nn.Module:
    """Five unpadded 3x3 convs (3 more than the tutorial), FC 16-120-10: 6,194 parameters.

    Layout: conv 6, conv 8, pool, conv 8, conv 8, pool, conv 16, pool (32->30->28->14->12->10
    ->5->3->1), then FC 16-120-10 (the 84 layer removed, since only 16 features are left).
    Ambiguous: the report does not give kernels, channels or pool positions. A search over
    five unpadded convs (3x3 or 5x5, channels 2..32, any pool positions, FC 120/84/120-84)
    finds ~600 layouts with 6,194 parameters; this one keeps the tutorial's 6 first channels,
    16 last channels and 120-wide FC layer, grows channels monotonically and pools as Q1_5
    does (after every two convs) plus once at the end.
    """
    return ConvNet(layers=conv_stack((6, 8, 8, 8, 16), kernel=3, pool_after=(2, 4, 5)),
                   hidden=(120,), **kwargs)


@cnn_model
def Q1_5(**kwargs) -> nn.Module:
    """Four unpadded 3x3 convs, pool after every two, FC 400-120-84-10: 61,694 parameters.

    conv 3->8, 8->8, pool, 8->8, 8->16, pool (32->30->28->14->12->10->5): 16*5*5 = 400 features,
    the tutorial's FC head. Ambiguous: channels are not given; (8, 8, 8, 16) is the only
    layout with the tutorial head, the tutorial's final 16 channels and power-of-two widths
    (others, e.g. (3, 13, 8, 16), match the count too).
    """
    return ConvNet(layers=conv_stack((8, 8, 8, 16), kernel=3, pool_after=(2, 4)),
                   hidden=(120, 84), **kwargs)


@cnn_model
def Q1_6(**kwargs) -> nn.Module:
    """Three same-padded 3x3 convs, each followed by a pool, FC 256-120-84-10: 44,028 params.

    conv 3->6, pool, 6->10, pool, 10->16, pool (32->16->8->4): 16*4*4 = 256 features. The
    search over 2-5 padded 3x3 conv+pool blocks with the tutorial heads gives this as the only
    layout with fewer than five blocks.
    """
    return ConvNet(layers=conv_stack((6, 10, 16), kernel=3, pad=1, pool_after=(1, 2, 3)),
                   hidden=(120, 84), **kwargs)


@cnn_model
def Q1_7(**kwargs) -> nn.Module:
    """Q1_2 with a wider FC layer: FC 400-120-10, 52,202 parameters."""
    return TutorialNet(hidden=(120,), **kwargs)


@cnn_model
def Q1_8(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 8 and 20: 75,762 parameters."""
    return TutorialNet(conv_channels=(8, 20), **kwargs)


@cnn_model
def Q1_9(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 10 and 24: 89,918 parameters."""
    return TutorialNet(conv_channels=(10, 24), **kwargs)


@cnn_model
def Q1_10(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 10 and 28: 102,922 parameters."""
    return TutorialNet(conv_channels=(10, 28), **kwargs)


@cnn_model
def Q1_11(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 10 and 36 and FC 900-400-120-84-10: 429,330 parameters.

    Exactly the report's layer table.
    """
    return TutorialNet(conv_channels=(10, 36), hidden=(400, 120, 84), **kwargs)


@cnn_model
def Q1_12(**kwargs) -> nn.Module:
    """Q1_4's five 3x3 convs, same-padded and narrower, FC 512-84-10: 44,912 parameters.

    conv 3->5, 5->3, pool, 3->3, 3->6, pool, 6->8 (32->16->8): 8*8*8 = 512 features.
    "Add padding to the conv layers but remove some of the channels": the search over Q1_4's
    five 3x3 convs with padding 1, every channel at most Q1_4's, any pools and the tutorial
    heads finds only layouts with two pools and the 84-wide head. Ambiguous: the channels
    (5, 3, 3, 6, 8) are one of five that match; this one keeps Q1_5's pool positions.
    """
    return ConvNet(layers=conv_stack((5, 3, 3, 6, 8), kernel=3, pad=1, pool_after=(2, 4)),
                   hidden=(84,), **kwargs)


@cnn_model
def Q1_13(**kwargs) -> nn.Module:
    """Tutorial net with 8 channels in the last conv layer: 36,798 parameters.

    Q1_13..Q1_16 differ by 3,151 parameters per channel = 6*5*5+1 (conv) + 25*120 (fc1):
    the tutorial net with its second conv narrowed, as the report says.
    """
    return TutorialNet(conv_channels=(6, 8), **kwargs)


@cnn_model
def Q1_14(**kwargs) -> nn.Module:
    """Tutorial net with 10 channels in the last conv layer: 43,100 parameters."""
    return TutorialNet(conv_channels=(6, 10), **kwargs)


@cnn_model
def Q1_15(**kwargs) -> nn.Module:
    """Tutorial net with 12 channels in the last conv layer: 49,402 parameters."""
    return TutorialNet(conv_channels=(6, 12), **kwargs)


@cnn_model
def Q1_16(**kwargs) -> nn.Module:
    """Tutorial net with 14 channels in the last conv layer: 55,704 parameters."""
    return TutorialNet(conv_channels=(6, 14), **kwargs)


@cnn_model
def Q1_17(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 4 and 6 (at most 6), FC 150-120-84-10: 30,044 params.

    "Max of 6 channels and lowering the fully connected respectively": the FC input falls to
    6*5*5 = 150; (4, 6) with the tutorial head is the only fit with FC widths 120-84.
    """
    return TutorialNet(conv_channels=(4, 6), **kwargs)


@cnn_model
def Q1_18(**kwargs) -> nn.Module:
    """Tutorial net with conv channels 4 and 5 (at most 5), FC 125-120-84-10: 26,943 params.

    As Q1_17: (4, 5) with the tutorial head is the only fit with FC widths 120-84.
    """
    return TutorialNet(conv_channels=(4, 5), **kwargs)


# --- Q1_19 ... Q1_25: VGG-style, many conv channels, two FC layers --------------------------

@cnn_model
def Q1_19(**kwargs) -> nn.Module:
    """VGG-style 2x(32, 64, 128) 3x3 convs with pools, FC 2048-128-10: 550,570 parameters.

    Exactly the report's layer table.
    """
    return ConvNet(layers=vgg_stages([(32, (3, 3)), (64, (3, 3)), (128, (3, 3))]),
                   hidden=(128,), **kwargs)


@cnn_model
def Q1_20(**kwargs) -> nn.Module:
    """Q1_19 with one conv per stage (32, 64, 128), FC 2048-128-10: 356,810 parameters.

    Q1_19 minus its three second convs (9,248 + 36,928 + 147,584 = 193,760) gives the count.
    """
    return ConvNet(layers=vgg_stages([(32, (3,)), (64, (3,)), (128, (3,))]),
                   hidden=(128,), **kwargs)


@cnn_model
def Q1_21(**kwargs) -> nn.Module:
    """VGG-style 3x(8, 16, 32) 3x3 convs with pools, FC 512-256-10: 164,234 parameters.

    Ambiguous: the report only says "Q1_19's idea with fewer parameters". The search over
    three VGG stages (1-3 same-padded 3x3/5x5 convs, channels 8..256, hidden 16..1024) has
    no all-3x3 fit with Q1_19's channels; this is the only all-3x3 fit with uniform stages and
    doubling channels (deeper and narrower than Q1_19).
    """
    return ConvNet(layers=vgg_stages([(8, (3, 3, 3)), (16, (3, 3, 3)), (32, (3, 3, 3))]),
                   hidden=(256,), **kwargs)


@cnn_model
def Q1_22(**kwargs) -> nn.Module:
    """VGG-style 2x(16, 16, 16, 64) 3x3 convs, four pools, FC 256-176-10: 105,258 parameters.

    Ambiguous: as Q1_21. Q1_19's exact pattern (two 3x3 convs per stage, a pool after each)
    with a fourth stage; no 3-stage all-3x3 layout (channels 16..512, 1-3 convs per stage)
    with one power-of-two hidden layer fits.
    """
    return ConvNet(layers=vgg_stages([(16, (3, 3)), (16, (3, 3)), (16, (3, 3)), (64, (3, 3))]),
                   hidden=(176,), **kwargs)


@cnn_model
def Q1_23(**kwargs) -> nn.Module:
    """Q1_19 plus a 5x5 128->128 conv at the end of stage 3: 960,298 parameters.

    960,298 - 550,570 = 409,728 = 128*(128*5*5) + 128, exactly one same-padded 5x5 conv at 128
    channels. Q1_24 has the same layers in another order (the 5x5 conv between the 3x3s).
    """
    return ConvNet(layers=vgg_stages([(32, (3, 3)), (64, (3, 3)), (128, (3, 3, 5))]),
                   hidden=(128,), **kwargs)


@cnn_model
def Q1_24(**kwargs) -> nn.Module:
    """Q1_23 with its 5x5 conv between stage 3's two 3x3 convs: 960,298 parameters.

    The report lists the same count for Q1_23 and Q1_24, so they share layer sizes; the
    order within stage 3 (3x3, 5x5, 3x3 here; 3x3, 3x3, 5x5 in Q1_23) is our choice.
    """
    return ConvNet(layers=vgg_stages([(32, (3, 3)), (64, (3, 3)), (128, (3, 5, 3))]),
                   hidden=(128,), **kwargs)


@cnn_model
def Q1_25(**kwargs) -> nn.Module:
    """VGG-style (72, 2x144, 2x288) 3x3 convs with pools, FC 4608-160-10: 2,141,610 params.

    Ambiguous: "Q1_19's idea with more parameters". Among VGG stages with doubling channels
    and 3x3 convs this is the only fit with a single hidden layer (one conv in stage 1, two
    in stages 2 and 3, as Q1_19).
    """
    return ConvNet(layers=vgg_stages([(72, (3,)), (144, (3, 3)), (288, (3, 3))]),
                   hidden=(160,), **kwargs)


# --- Q2: linear-only nets ---------------------------------------------------------------------

@cnn_model
def Q2_1(**kwargs) -> nn.Module:
    """Q1_1 with no ReLU and no max-pool (linear only), FC 9216-120-84-10: 1,119,926 params.

    The report: the non-linear layers were MaxPool2d and ReLU, both removed, and the FC input
    grew since no pool shrinks it: 16*24*24 = 9,216 features.
    """
    return TutorialNet(pool=False, nonlinear=False, **kwargs)


@cnn_model
def Q2_2(**kwargs) -> nn.Module:
    """Q2_1 with wider FC layers, 9216-280-120-10 (linear only): 2,618,562 parameters.

    "We increased the FC dimension, reaching 2,618,562": with Q2_1's convs the only FC head
    with round widths (one to three hidden layers) that fits is 280-120.
    """
    return TutorialNet(pool=False, nonlinear=False, hidden=(280, 120), **kwargs)


# --- controls and a modern baseline -----------------------------------------------------------

class MLP(nn.Module):
    """A plain MLP on the flattened image: no spatial prior (pixel order does not matter)."""

    def __init__(self, *, in_features: int = 3 * 32 * 32, hidden: Sequence[int] = (512, 256),
                 num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        widths = (in_features, *hidden)
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        return self.net(x)


@cnn_model
def MLP_control(**kwargs) -> nn.Module:
    """MLP 3072-512-256-10 with ReLU: the control for the pixel-permutation experiments."""
    return MLP(**kwargs)


def conv_bn_relu(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + block(x): two conv-bn-relu layers at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv_bn_relu(channels, channels),
                                   conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class FastResNet(nn.Module):
    """ResNet-9 / airbench-style CIFAR net: stem, then per stage conv-bn-relu, 2x2 max-pool and
    a residual block; global max-pool and a bias-free linear head scaled by `head_scale`.

    With widths (64, 128, 256) the feature maps are (B, 64, 16, 16), (B, 128, 8, 8),
    (B, 256, 4, 4). Only standard layers, so `model.to(memory_format=torch.channels_last)`
    works unchanged.
    """

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64), stem_width: int = 16,
                 num_classes: int = 10, head_scale: float = 0.125) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, stem_width)  # (B, stem_width, 32, 32)
        stages: list[nn.Module] = []
        channels = stem_width
        for width in widths:
            stages += [conv_bn_relu(channels, width), nn.MaxPool2d(2), Residual(width)]
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.head_scale = head_scale  # ResNet-9's 0.125: small initial logits train faster

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, num_classes)
        features = self.pool(self.stages(self.stem(x))).flatten(1)  # (B, widths[-1])
        return self.head(features) * self.head_scale


@cnn_model
def ResNet_fast(**kwargs) -> nn.Module:
    """Fast small ResNet (ResNet-9 / airbench style), widths (16, 32, 64): 8.7 M MACs.

    Sized for the 15-minute budget on a 2-core CPU: widths (64, 128, 256) with a 32-wide stem
    (114 M MACs, ResNet-9's) train at about 15 images/s there, a third of an epoch in 15 min;
    these widths train at about 500 images/s on one busy core with channels_last (the cnn
    study's fast recipe).
    """
    return FastResNet(**kwargs)
