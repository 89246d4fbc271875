"""Frechet distance between two image sets in the feature space of a small classifier.

torchmetrics' `FrechetInceptionDistance` does the maths (running sums in float64, then
||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))); here it gets a custom feature module instead
of Inception (which would need torch-fidelity and 299x299 RGB inputs). The real set's
statistics are accumulated once and kept, so several fake sets are compared to the same real
set cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class FeatureModule(nn.Module):
    """Wraps `features(x) -> (B, d)` as the module torchmetrics calls; `num_features` = d."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], num_features: int) -> None:
        super().__init__()
        self._features = features
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)


class FrechetDistance:
    """`FrechetDistance(module, real_batches)(fake_batches) -> float`.

    `module(x)` maps a batch to (B, d) features; `real_batches` / `fake_batches` are iterables
    of input batches that `module` accepts.
    """

    def __init__(self, module: nn.Module, real_batches: Iterable[torch.Tensor]) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        if not hasattr(module, "num_features"):
            raise ValueError("the feature module needs a `num_features` attribute")
        self.metric = FrechetInceptionDistance(feature=module, reset_real_features=False)
        self.metric.eval()
        for batch in real_batches:
            self.metric.update(batch, real=True)

    def __call__(self, fake_batches: Iterable[torch.Tensor]) -> float:
        self.metric.reset()  # drops the previous fake set, keeps the real statistics
        for batch in fake_batches:
            self.metric.update(batch, real=False)
        return float(self.metric.compute())

    @property
    def real_count(self) -> int:
        return int(self.metric.real_features_num_samples)

    def real_covariance(self) -> torch.Tensor:
        """The real set's feature covariance (d, d), float64, as the metric computes it."""
        return _covariance(self.metric.real_features_sum, self.metric.real_features_cov_sum,
                           self.metric.real_features_num_samples)

    def real_covariance_rank(self) -> int:
        return int(torch.linalg.matrix_rank(self.real_covariance(), hermitian=True))


def _covariance(total: torch.Tensor, outer: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    mean = (total / count).unsqueeze(0)
    return (outer - count * mean.t().mm(mean)) / (count - 1)


def batched(x: torch.Tensor, size: int = 1000) -> Iterable[torch.Tensor]:
    """Consecutive slices of `x` of `size` rows (the last may be smaller)."""
    return (x[i : i + size] for i in range(0, len(x), size))
