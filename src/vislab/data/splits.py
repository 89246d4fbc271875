"""Seeded, stratified splits (scikit-learn does the stratification)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from vislab.errors import VislabError


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): `fraction` of each class held out, the same for the same seed."""
    if fraction <= 0:
        return torch.arange(len(labels)), torch.empty(0, dtype=torch.long)
    index = np.arange(len(labels))
    try:
        keep, held_out = train_test_split(index, test_size=fraction, stratify=labels.numpy(), random_state=seed)
    except ValueError as error:
        raise VislabError(f"cannot hold out {fraction:.0%} of {len(labels)} examples per class: {error}") from None
    return torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held_out))
