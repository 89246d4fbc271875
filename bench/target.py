"""Time to target (figure 5): each study's default run, its training minutes and whether the
accuracy it reached meets the target from its issue.

    flock /tmp/vislab-heavy.lock python -m bench target    # every default run on the real data: hours
    python -m bench target --quick                          # tiny runs on built-in data, seconds each

Targets: faces 82 % restricted test accuracy, imbalance test macro-F1 0.85, latent 95 %
few-label accuracy, cnn ResNet_fast 91 % and Q1_1 60 % test accuracy. The figure is the
training minutes of the run; where the run writes a per-epoch validation metric the note also
gives the minutes until it first reached the target (a validation figure, not the test one).
`VISLAB_BENCH_STUDIES=cnn,cnn-Q1_1,faces,imbalance,latent` picks runs. In --quick mode the
runs are a few steps on generated data: the accuracies mean nothing, the row checks the
plumbing. For three seeds of each, see the per-study modules (cnn, faces, imbalance, latent).
"""

from __future__ import annotations

import tempfile

from bench._common import chosen_runs, row, run_overrides

# run -> (summary key of the figure, target, name, per-epoch validation key or None)
TARGETS = {
    "cnn": ("test_accuracy", 0.91, "cnn ResNet_fast test accuracy", "val_acc"),
    "cnn-Q1_1": ("test_accuracy", 0.60, "cnn Q1_1 test accuracy", "val_acc"),
    "faces": ("test_accuracy", 0.82, "faces restricted test accuracy", "val_acc"),
    "imbalance": ("test_macro_f1", 0.85, "imbalance test macro-F1", "dev_macro_f1"),
    "latent": ("fewlabel_accuracy", 0.95, "latent few-label accuracy", None),
}
SECONDS = {"cnn": "train_seconds", "cnn-Q1_1": "train_seconds", "imbalance": "train_seconds",
           "latent": "total_seconds"}  # faces: train_minutes


def run(quick: bool) -> list[dict]:
    from vislab.cli import run_study
    from vislab.runs import Run

    out = tempfile.mkdtemp(prefix="bench-target-")
    rows = []
    for key in chosen_runs():
        study, overrides = run_overrides(key, quick, out)
        summary, folder = run_study(study, overrides=overrides)
        metric, target, name, curve = TARGETS[key]
        value = float(summary[metric])
        minutes = summary["train_minutes"] if key == "faces" else summary[SECONDS[key]] / 60
        note = f"reached {value:.4f} (target {target}); " + _first_crossing(Run(folder).metrics(), curve, target)
        figure = row(f"time to target: {name}", "min", figure=minutes, reached=value,
                     note=note + "; target and met are the accuracy's" + ("; tiny run on built-in data" if quick else ""))
        rows.append(figure | {"target": target, "met": value >= target})
    return rows


def _first_crossing(metrics: list[dict], key: str | None, target: float) -> str:
    """'validation reached the target after N min (epoch E)', or why not."""
    if key is None or not metrics or key not in metrics[0]:
        return "no per-epoch validation curve"
    elapsed = 0.0
    for epoch_row in metrics:
        elapsed += float(epoch_row["seconds"])
        if float(epoch_row[key]) >= target:
            return f"{key} first >= target after {elapsed / 60:.2f} min (epoch {epoch_row['epoch']})"
    return f"{key} never reached the target (best {max(float(r[key]) for r in metrics):.4f})"
