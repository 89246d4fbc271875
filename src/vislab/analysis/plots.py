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


# ---------------------------------------------------------------------------------------------
# The data overview every report opens with: samples per class, and counts per split


def class_samples(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *, per_class: int = 8,
                  seed: int = 0, title: str = "") -> plt.Figure:
    """One row per class of `per_class` randomly drawn images (N, C, H, W), the class name at
    the left of its row; a class with fewer images leaves its row short."""
    generator = torch.Generator().manual_seed(seed)
    rows = len(classes)
    size = 0.9 if rows <= 5 else 0.65  # inches per image: ten classes stay under a page
    figure, axes = plt.subplots(rows, per_class, figsize=(size * per_class + 1, size * rows + (0.5 if title else 0.1)),
                                squeeze=False)
    for row, name in enumerate(classes):
        members = torch.nonzero(labels == row).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(chosen):
                image = images[chosen[column]].detach().cpu()
                image = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
                image = image.permute(1, 2, 0).numpy()
                gray = image.shape[-1] == 1
                axis.imshow(image.squeeze(-1) if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
        axes[row, 0].set_ylabel(f"{name}\n({len(members)})", rotation=0, ha="right", va="center", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def split_counts_figure(counts: Mapping[str, Mapping[str, int]], *, title: str = "") -> plt.Figure:
    """Grouped bars: one group per class (or pair kind), one bar per split, counts written on
    the bars; the legend gives each split's size, so the imbalance shows at a glance."""
    splits = list(counts)
    names = list(dict.fromkeys(name for split in splits for name in counts[split]))
    width = 0.8 / max(len(splits), 1)
    figure, axis = plt.subplots(figsize=(min(9.0, max(4.5, 0.3 * len(names) * max(len(splits), 1) + 2)), 3.4))
    for index, split in enumerate(splits):
        values = [counts[split].get(name, 0) for name in names]
        positions = np.arange(len(names)) + (index - (len(splits) - 1) / 2) * width
        bars = axis.bar(positions, values, width, label=f"{split} (n={sum(values):,})")
        if len(names) * len(splits) <= 40:
            axis.bar_label(bars, fontsize=7, padding=1)
    axis.set_xticks(range(len(names)), names, rotation=45 if len(names) > 5 else 0,
                    ha="right" if len(names) > 5 else "center")
    axis.set_ylabel("count")
    axis.margins(y=0.12)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def write_data_overview(run, counts: Mapping[str, Mapping[str, int]], samples: plt.Figure, *, title: str = "",
                        notes: Mapping[str, str] | None = None) -> None:
    """plots/data_samples.png, plots/data_counts.png and tables/data_counts.csv (one row per
    split: its size, each class's count, and a note such as '4,038 images of 1,680 people')."""
    run.plot("data_samples", samples)
    run.plot("data_counts", split_counts_figure(counts, title=title))
    notes = dict(notes or {})
    names = list(dict.fromkeys(name for split in counts for name in counts[split]))
    rows = [{"split": split, "size": sum(counts[split].values()), **{name: counts[split].get(name, 0) for name in names},
             "note": notes.pop(split, "")} for split in counts]
    rows += [{"split": split, "note": note} for split, note in notes.items()]  # splits with no classes to count
    run.table("data_counts", rows)


def data_overview(run, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str], *,
                  title: str = "", seed: int = 0) -> None:
    """The data overview of a classification study: `splits` maps a split name to its
    (images (N, C, H, W), labels (N,)); the samples come from the first split."""
    counts = {split: {name: int((labels == index).sum()) for index, name in enumerate(classes)}
              for split, (_, labels) in splits.items()}
    first, (images, labels) = next(iter(splits.items()))
    write_data_overview(run, counts, class_samples(images, labels, classes, seed=seed,
                                                   title=f"{title}: {first} images per class" if title else ""),
                        title=f"{title}: images per class and split" if title else "")
