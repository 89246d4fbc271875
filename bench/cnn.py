"""cnn targets: the tutorial net and the strong model with their default recipes, and the
report's Q3/Q4 figures. Mean (and spread) over 3 seeds on the real data.

    flock /tmp/vislab-heavy.lock python -m bench cnn          # about 1 h 10 min on 2 cores
    python -m bench cnn --quick                               # built-in data, one seed: a smoke check

`VISLAB_BENCH_CNN=q1,fast,permute` picks parts (default: all three). Figures come from the
JPEG copy of CIFAR-10 (slightly below those of the original pixels). Training time is the
wall time of the epoch loop (training and per-epoch validation), not loading or testing.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("VISLAB_DATA") or str(REPO.parent / "shared" / "data")
SEEDS = (0, 1, 2)


def _runs(overrides: list[str], seeds, quick: bool) -> list[dict]:
    from vislab.cli import run_study

    out = tempfile.mkdtemp(prefix="bench-cnn-")
    data = ["data_root=builtin", "epochs=1"] if quick else [f"data_root={DATA}"]
    return [run_study("cnn", overrides=[*overrides, *data, f"seed={seed}", f"out={out}"])[0] for seed in seeds]


def _row(name: str, values: list[float], unit: str, *, target: float, higher_is_better: bool,
         baseline: float | None = None, note: str = "") -> dict:
    mean = statistics.fmean(values)
    spread = f"{min(values):.4g}..{max(values):.4g}, n={len(values)}"
    met = mean >= target if higher_is_better else mean <= target
    return {"name": name, "figure": mean, "unit": unit, "target": target, "met": met,
            "baseline": baseline, "ratio": None if baseline is None else mean / baseline,
            "note": f"{spread}{'; ' + note if note else ''}"}


def run(quick: bool) -> list[dict]:
    seeds = SEEDS[:1] if quick else SEEDS
    parts = os.environ.get("VISLAB_BENCH_CNN", "q1,fast,permute").split(",")
    rows = []
    if "q1" in parts:
        runs = _runs(["model_name=Q1_1"], seeds, quick)
        rows.append(_row("Q1_1 defaults: test accuracy", [r["test_accuracy"] for r in runs], "share",
                         target=0.60, higher_is_better=True, note="tutorial: about 0.54-0.63"))
        rows.append(_row("Q1_1 defaults: training seconds", [r["train_seconds"] for r in runs], "s",
                         target=120, higher_is_better=False))
    if "fast" in parts:
        runs = _runs([], seeds, quick)  # the default model and recipe
        rows.append(_row(f"{runs[0]['model_name']} defaults: test accuracy", [r["test_accuracy"] for r in runs],
                         "share", target=0.91, higher_is_better=True))
        rows.append(_row(f"{runs[0]['model_name']} defaults: training seconds", [r["train_seconds"] for r in runs],
                         "s", target=900, higher_is_better=False))
    if "permute" in parts:
        for mode, report in (("fixed", 0.40), ("per-image", 0.25)):
            runs = _runs(["model_name=Q1_1", f"permute={mode}"], seeds, quick)
            rows.append(_row(f"Q1_1 permute={mode}: test accuracy", [r["test_accuracy"] for r in runs], "share",
                             target=report, higher_is_better=True, baseline=report,
                             note="baseline and target: the report's figure"))
    return rows
