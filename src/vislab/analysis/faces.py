"""Verification metrics and figures for face pairs: threshold choice, ROC/AUC/EER, one-shot
N-way accuracy, score histograms and pair grids. Scores are "same person" scores in [0, 1],
higher meaning more alike; labels are 1 for same-person pairs."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn import metrics as skm  # noqa: E402


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def choose_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy): the threshold that maximises accuracy of `score >= threshold`
    on these pairs. Candidates are midpoints between consecutive distinct scores (and the two
    ends); among equally good ones the middle one is taken, so it sits inside the gap."""
    scores, labels = _numpy(scores).astype(np.float64), _numpy(labels).astype(bool)
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-6]])
    # Accuracy at each candidate in one pass: positives at or above + negatives below.
    positives_below = np.searchsorted(np.sort(scores[labels]), candidates, side="left")
    negatives_below = np.searchsorted(np.sort(scores[~labels]), candidates, side="left")
    correct = (labels.sum() - positives_below) + negatives_below
    best = np.flatnonzero(correct == correct.max())
    index = best[len(best) // 2]
    return float(candidates[index]), float(correct[index] / len(scores))


def accuracy_at(scores, labels, threshold: float) -> float:
    scores, labels = _numpy(scores), _numpy(labels).astype(bool)
    return float(((scores >= threshold) == labels).mean())


def roc_figures(scores, labels) -> dict[str, float]:
    """AUC and equal error rate (where the false accept rate equals the false reject rate,
    linearly interpolated on scikit-learn's ROC curve)."""
    scores, labels = _numpy(scores), _numpy(labels).astype(int)
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    fnr = 1 - tpr
    gap = fpr - fnr  # rises from -1 to +1 along the curve
    crossing = int(np.argmax(gap >= 0))
    if crossing == 0:
        eer = float(fpr[0])
    else:
        g0, g1 = gap[crossing - 1], gap[crossing]
        w = 0.0 if g1 == g0 else -g0 / (g1 - g0)
        eer = float(fpr[crossing - 1] + w * (fpr[crossing] - fpr[crossing - 1]))
    return {"auc": float(skm.roc_auc_score(labels, scores)), "eer": eer}


def oneshot_trials(person: torch.Tensor, ways: int, trials: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Koch's N-way one-shot task: (probes (T,), candidates (T, ways)) image indices, where
    candidate 0 is another image of the probe's person and the other `ways - 1` are one image
    each of other people. `person` (M,) names the person of each image. None when fewer than
    `ways` people, or no person with two images, exist."""
    person = person.long()
    people = person.unique()
    counts = torch.bincount(person, minlength=int(people.max()) + 1 if len(people) else 0)
    eligible = people[counts[people] >= 2]
    if len(people) < ways or len(eligible) == 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    by_person = {int(p): torch.nonzero(person == p).flatten() for p in people}
    probes, candidates = [], []
    for _ in range(trials):
        target = int(eligible[torch.randint(len(eligible), (1,), generator=generator)])
        own = by_person[target][torch.randperm(len(by_person[target]), generator=generator)[:2]]
        others = people[people != target]
        others = others[torch.randperm(len(others), generator=generator)[: ways - 1]]
        row = [int(own[1])]
        for other in others.tolist():
            images = by_person[other]
            row.append(int(images[torch.randint(len(images), (1,), generator=generator)]))
        probes.append(int(own[0]))
        candidates.append(row)
    return torch.tensor(probes), torch.tensor(candidates)


def oneshot_accuracy(scores: torch.Tensor) -> float:
    """Share of trials whose same-person candidate (column 0 of `scores` (T, ways)) scores
    strictly highest; a tie counts as wrong."""
    return float((scores[:, 0] > scores[:, 1:].max(dim=1).values).float().mean())


# ---------------------------------------------------------------------------------------------
# figures


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> plt.Figure:
    """ROC curves {name: (scores, labels)} with their AUC in the legend."""
    figure, axis = plt.subplots(figsize=(4.6, 4.2))
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = skm.roc_curve(_numpy(labels).astype(int), _numpy(scores))
        axis.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.plot([0, 1], [1, 0], ":", color="lightgrey", label="EER line")
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def score_histogram(scores, labels, threshold: float, title: str = "") -> plt.Figure:
    """Scores of same-person and different-person pairs, with the decision threshold."""
    scores, labels = _numpy(scores), _numpy(labels).astype(bool)
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    low, high = 0.0, 1.0
    if len(scores) and float(scores.max() - scores.min()) < 0.25:  # crowded together: zoom in, or it is one bar
        margin = max(float(scores.max() - scores.min()) * 0.05, 1e-6)
        low, high = float(scores.min()) - margin, float(scores.max()) + margin
    bins = np.linspace(low, high, 41)
    axis.hist(scores[labels], bins=bins, alpha=0.6, label="same person", color="#4c78a8")
    axis.hist(scores[~labels], bins=bins, alpha=0.6, label="different people", color="#e45756")
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    if low <= 0.5 <= high:
        axis.axvline(0.5, color="grey", linestyle=":", label="0.5")
    axis.set_xlabel("same-person score" if (low, high) == (0.0, 1.0) else
                    f"same-person score (zoomed: all scores lie in {low:.4f}..{high:.4f})")
    axis.set_ylabel("pairs")
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def pair_grid(first: torch.Tensor, second: torch.Tensor, captions: Sequence[str], title: str = "") -> plt.Figure:
    """Pairs side by side, one pair per row of two images: (K, C, H, W) uint8 each."""
    count = len(captions)
    columns = min(count, 4)
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * columns * 1.1, 1.4 * rows + 0.5), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index in range(count):
        row, column = divmod(index, columns)
        for side, images in enumerate((first, second)):
            image = images[index].permute(1, 2, 0).cpu().numpy()
            gray = image.shape[-1] == 1
            axes[row, 2 * column + side].imshow(image.squeeze(-1) if gray else image, cmap="gray" if gray else None,
                                                vmin=0, vmax=255)
        axes[row, 2 * column].set_title(captions[index], fontsize=7, loc="left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
