"""Figures every study uses: training curves, confusion matrices, bars, image grids.

Each function returns a matplotlib Figure; `Run.plot(name, figure)` saves and closes it.
The Agg backend is forced: runs happen on servers and in CI with no display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _column(rows: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    return np.array([float(row[key]) if row.get(key) not in (None, "") else np.nan for row in rows])


def training_curves(rows: Sequence[Mapping[str, object]], title: str = "") -> plt.Figure:
    """Loss and accuracy (train and validation) against epoch, from metrics.csv rows."""
    epochs = _column(rows, "epoch")
    pairs = [("loss", "train_loss", "val_loss"), ("accuracy", "train_acc", "val_acc")]
    pairs = [p for p in pairs if any(key in rows[0] for key in p[1:])] if rows else []
    figure, axes = plt.subplots(1, max(len(pairs), 1), figsize=(5 * max(len(pairs), 1), 3.4), squeeze=False)
    for axis, (label, train_key, val_key) in zip(axes[0], pairs):
        for key, style in ((train_key, "-"), (val_key, "--")):
            if rows and key in rows[0]:
                axis.plot(epochs, _column(rows, key), style, marker="o", markersize=3, label=key)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> plt.Figure:
    """Counts and row-normalised shares side by side."""
    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.4 + 0.45 * len(classes)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for axis, matrix, fmt, name in ((axes[0], counts, "{:.0f}", "counts"), (axes[1], shares, "{:.2f}", "share of true class")):
        axis.imshow(matrix, cmap="Blues", vmin=0)
        axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        axis.set_yticks(range(len(classes)), classes)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(name)
        limit = matrix.max() or 1
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                      color="white" if value > 0.6 * limit else "black")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def bar_chart(values: Mapping[str, float], *, ylabel: str, title: str = "", errors: Mapping[str, float] | None = None) -> plt.Figure:
    names = list(values)
    figure, axis = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.4))
    axis.bar(names, [values[n] for n in names], yerr=[errors[n] for n in names] if errors else None,
             color="#4c78a8", capsize=3)
    axis.set_ylabel(ylabel)
    axis.tick_params(axis="x", rotation=45)
    axis.grid(axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def image_grid(images: torch.Tensor, *, nrow: int, titles: Sequence[str] | None = None, title: str = "",
               scale: float = 1.2) -> plt.Figure:
    """A grid of images (N, C, H, W), uint8 or float in [0, 1], with optional titles."""
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    count = images.shape[0]
    ncol = nrow
    rows = int(np.ceil(count / ncol))
    figure, axes = plt.subplots(rows, ncol, figsize=(scale * ncol, scale * rows + (0.4 if title else 0)), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = images[index].permute(1, 2, 0).numpy()
        axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                    vmin=0, vmax=255)
        if titles is not None:
            axis.set_title(titles[index], fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
