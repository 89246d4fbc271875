"""Classification metrics, computed by scikit-learn (the reference the field trusts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn import metrics as skm


def _numpy(values: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    return values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def classification_metrics(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/accuracy, macro and weighted
    averages, and the confusion matrix (rows: true class, columns: predicted)."""
    y_true, y_pred = _numpy(y_true), _numpy(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "accuracy": float(recall[i]),  # per-class accuracy is the class's recall
               "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    macro = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    weighted = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    present = support > 0
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        # mean recall over the classes present in y_true (sklearn's balanced_accuracy_score)
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(macro[0]), "macro_recall": float(macro[1]), "macro_f1": float(macro[2]),
        "weighted_precision": float(weighted[0]), "weighted_recall": float(weighted[1]),
        "weighted_f1": float(weighted[2]),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def per_class_accuracy(y_true, y_pred, classes: Sequence[str]) -> dict[str, float]:
    y_true, y_pred = _numpy(y_true), _numpy(y_pred)
    return {name: float((y_pred[y_true == i] == i).mean()) if (y_true == i).any() else float("nan")
            for i, name in enumerate(classes)}
