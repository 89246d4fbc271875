"""Face-verification networks: a configurable conv tower (Koch et al. 2015 as a preset), the
Koch Siamese head, and a small residual embedding net for the fast default.

Every model maps a batch of images (B, C, H, W) to an embedding (B, D) with `embed`, and a
pair of embeddings to a same-person logit or a similarity with `pair_logit`. Models import
only torch: the study wires data, losses and training around them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vislab.models.registry import register_model

# Koch, Zemel, Salakhutdinov (2015), Siamese Neural Networks for One-shot Image Recognition:
# 105x105 grayscale, conv 64@10 -> pool -> 128@7 -> pool -> 128@4 -> pool -> 256@4 -> FC 4096 sigmoid.
KOCH_CONV_BLOCKS: tuple[dict, ...] = (
    {"out_channels": 64, "kernel": 10, "pool": True},
    {"out_channels": 128, "kernel": 7, "pool": True},
    {"out_channels": 128, "kernel": 4, "pool": True},
    {"out_channels": 256, "kernel": 4, "pool": False},
)
KOCH_FC_LAYERS: tuple[dict, ...] = ({"out_features": 4096, "activation": "sigmoid"},)

_BLOCK_KEYS = {"out_channels", "kernel", "stride", "padding", "pool", "batchnorm", "dropout"}
_FC_KEYS = {"out_features", "activation", "batchnorm", "dropout"}
_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "none": nn.Identity}


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, pool: bool = False) -> int:
    """Side of a conv block's output for a square input of side `size` (floor division, as torch)."""
    size = (size + 2 * padding - kernel) // stride + 1
    return size // 2 if pool else size


class ConvTower(nn.Module):
    """A stack of conv blocks (conv -> [batch-norm] -> ReLU -> [max-pool 2x2] -> [dropout]) and
    fully connected layers; every block's output size is computed from `image_size`.

    `conv_blocks`: mappings with out_channels, kernel, and optionally stride (1), padding (0),
    pool (False), batchnorm (False), dropout (0.0). `fc_layers`: out_features, and optionally
    activation ('relu', 'sigmoid' or 'none'; default 'relu'), batchnorm, dropout.
    """

    def __init__(self, *, in_channels: int, image_size: int, conv_blocks: Sequence[Mapping],
                 fc_layers: Sequence[Mapping], koch_init: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        self.block_sizes: list[tuple[int, int, int]] = []  # (channels, height, width) after each block
        for number, block in enumerate(conv_blocks, start=1):
            unknown = set(block) - _BLOCK_KEYS
            if unknown:
                raise ValueError(f"conv block {number}: unknown keys {sorted(unknown)}; use {sorted(_BLOCK_KEYS)}")
            kernel, stride, padding = int(block["kernel"]), int(block.get("stride", 1)), int(block.get("padding", 0))
            pool = bool(block.get("pool", False))
            new_size = conv_output_size(size, kernel, stride, padding, pool)
            if new_size < 1:
                raise ValueError(f"conv block {number} (kernel {kernel}, stride {stride}, pool {pool}) gets a "
                                 f"{size}x{size} input and would output nothing; use a larger image_size or fewer blocks")
            out = int(block["out_channels"])
            layers.append(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding))
            if block.get("batchnorm", False):
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            if pool:
                layers.append(nn.MaxPool2d(2))
            if float(block.get("dropout", 0.0)) > 0:
                layers.append(nn.Dropout2d(float(block["dropout"])))
            channels, size = out, new_size
            self.block_sizes.append((channels, size, size))
        layers.append(nn.Flatten())
        features = channels * size * size
        for number, layer in enumerate(fc_layers, start=1):
            unknown = set(layer) - _FC_KEYS
            if unknown:
                raise ValueError(f"fc layer {number}: unknown keys {sorted(unknown)}; use {sorted(_FC_KEYS)}")
            out = int(layer["out_features"])
            layers.append(nn.Linear(features, out))
            if layer.get("batchnorm", False):
                layers.append(nn.BatchNorm1d(out))
            activation = layer.get("activation", "relu")
            if activation not in _ACTIVATIONS:
                raise ValueError(f"fc layer {number}: activation {activation!r}; use one of {sorted(_ACTIVATIONS)}")
            layers.append(_ACTIVATIONS[activation]())
            if float(layer.get("dropout", 0.0)) > 0:
                layers.append(nn.Dropout(float(layer["dropout"])))
            features = out
        self.layers = nn.Sequential(*layers)
        self.embedding_dim = features
        if koch_init:
            koch_initialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, C, H, W) -> (B, embedding_dim)


def koch_initialise(module: nn.Module) -> None:
    """Koch et al.'s initialisation: conv weights N(0, 0.01), FC weights N(0, 0.2),
    every bias N(0.5, 0.01)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.01 if isinstance(layer, nn.Conv2d) else 0.2)
            nn.init.normal_(layer.bias, 0.5, 0.01)


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch-norm, identity or 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class ResFaceTower(nn.Module):
    """A small ResNet: a stride-2 3x3 stem, one stage of basic blocks per width (each stage after
    the first halves the side), global average pooling, then a linear embedding with batch-norm."""

    def __init__(self, *, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256),
                 depths: Sequence[int] = (1, 1, 1, 1), embedding_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, channels = [], widths[0]
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [_BasicBlock(channels, width, stride=1 if index == 0 else 2)]
            blocks += [_BasicBlock(width, width, stride=1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.embedding = nn.Linear(channels, embedding_dim, bias=False)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, C) global average pooling
        return self.embedding_bn(self.embedding(self.dropout(features)))  # (B, embedding_dim)


class SiameseNet(nn.Module):
    """A shared tower applied to both images; the score of a pair is either Koch's head
    (a linear layer on the L1 distance of the embeddings, a same-person logit) or the cosine
    similarity of the embeddings."""

    def __init__(self, *, tower: nn.Module, head: str = "l1") -> None:
        super().__init__()
        if head not in ("l1", "cosine"):
            raise ValueError(f"head {head!r}: use 'l1' (Koch) or 'cosine'")
        self.tower, self.head = tower, head
        self.l1_head = nn.Linear(tower.embedding_dim, 1) if head == "l1" else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)  # (B, C, H, W) -> (B, D)

    def pair_logit(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) -> (B,): a same-person logit (l1) or the cosine similarity in [-1, 1]."""
        if self.l1_head is not None:
            return self.l1_head((e1 - e2).abs()).squeeze(-1)
        return F.cosine_similarity(e1, e2, dim=-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.pair_logit(self.embed(x1), self.embed(x2))


# ---------------------------------------------------------------------------------------------
# Registered variants. Builders take keyword overrides so that a config can resize them.


def _pair_example(shape: tuple[int, ...]):
    return lambda batch: (torch.randn(batch, *shape), torch.randn(batch, *shape))


@register_model(study="faces", input_shape=(1, 105, 105), example=_pair_example((1, 105, 105)))
def koch(*, in_channels: int = 1, image_size: int = 105, batchnorm: bool = False, dropout: float = 0.0,
         koch_init: bool = True) -> SiameseNet:
    """Koch et al. 2015: conv 64@10,128@7,128@4,256@4, FC 4096 sigmoid, L1 head (38.9M params)."""
    blocks = [{**block, "batchnorm": batchnorm, "dropout": dropout} for block in KOCH_CONV_BLOCKS]
    fc = [{**layer, "dropout": dropout} for layer in KOCH_FC_LAYERS]
    tower = ConvTower(in_channels=in_channels, image_size=image_size, conv_blocks=blocks, fc_layers=fc,
                      koch_init=koch_init)
    model = SiameseNet(tower=tower, head="l1")
    if koch_init:
        koch_initialise(model.l1_head)
    return model


@register_model(study="faces", input_shape=(3, 48, 48), example=_pair_example((3, 48, 48)))
def resface(*, in_channels: int = 3, widths: Sequence[int] = (24, 48, 96, 192), depths: Sequence[int] = (1, 1, 1, 1),
            embedding_dim: int = 128, dropout: float = 0.0, head: str = "cosine") -> SiameseNet:
    """Small ResNet (4 stages of basic blocks, global pooling, 128-d embedding), cosine score."""
    tower = ResFaceTower(in_channels=in_channels, widths=widths, depths=depths, embedding_dim=embedding_dim,
                         dropout=dropout)
    return SiameseNet(tower=tower, head=head)
