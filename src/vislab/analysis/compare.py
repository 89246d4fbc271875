"""`vislab compare RUN_DIR...`: one page comparing runs of one study side by side.

Runs whose configs are equal except for the seed form a group; a group of two or more runs
gets a mean +- std column (sample standard deviation, n-1) for every numeric summary figure.
Per-epoch metrics are overlaid, one figure per metric. Built from the run folders' files only.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vislab.analysis.report import RunFiles, environment, number
from vislab.errors import VislabError
from vislab.runs import Run, atomic_write

IGNORED_KEYS = ("out", "num_threads")  # where a run was written and how many threads: not the experiment


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flat_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numeric_summary(summary: dict[str, Any], prefix: str = "") -> dict[str, int | float]:
    """Every number in a summary under its dotted key (lists of records by index)."""
    found: dict[str, int | float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            found[name] = value
        elif isinstance(value, dict):
            found |= numeric_summary(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, record in enumerate(value):
                found |= numeric_summary(record, f"{name}[{record_name(value, index)}].")
    return found


def record_name(records: Sequence[dict[str, Any]], index: int) -> str:
    """A sweep variant's name from its text fields that differ between variants ('Q1_1 fixed'),
    so that two sweeps line up by variant, not by position; the index when none differ."""
    fields = [key for key, value in records[index].items() if isinstance(value, str)
              and len({str(record.get(key)) for record in records}) > 1]
    return " ".join(str(records[index][key]) for key in fields) or str(index)


def read_runs(paths: Sequence[str | Path]) -> list[RunFiles]:
    """The run folders, checked: each exists and is a run folder, no folder twice, one study."""
    if len(paths) < 2:
        raise VislabError("compare needs at least two run folders")
    for path in paths:
        if not Path(path).is_dir():
            raise VislabError(f"{path}: no such folder; pass run folders that `vislab run` printed")
    resolved = [Path(path).resolve() for path in paths]
    repeated = sorted({str(path) for path in resolved if resolved.count(path) > 1})
    if repeated:
        raise VislabError(f"{repeated[0]} is given more than once")
    runs = [RunFiles.read(path) for path in paths]
    studies = {run.study for run in runs}
    if len(studies) > 1:
        listed = ", ".join(f"{run.path.name} ({run.study})" for run in runs)
        raise VislabError(f"runs of different studies cannot be compared: {listed}; pass runs of one study")
    return runs


def study_defaults(study: str) -> dict[str, Any]:
    """The study's current default config, flat: a key added after a run was made counts as
    its default there, not as a difference."""
    try:
        from vislab.config import to_dict
        from vislab.studies import get_study

        return flat_config(to_dict(get_study(study).Config()))
    except Exception:  # noqa: BLE001 - an unknown or changed study: compare the files as they are
        return {}


def groups(runs: Sequence[RunFiles]) -> tuple[list[list[int]], list[str]]:
    """(groups of run indices whose configs differ at most in the seed, config keys that differ
    between runs other than the seed)."""
    defaults = study_defaults(runs[0].study)
    configs = [defaults | flat_config(run.config) for run in runs]
    keys = sorted({key for config in configs for key in config} - set(IGNORED_KEYS))
    differing = [key for key in keys if len({repr(config.get(key)) for config in configs}) > 1]
    by_config: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        signature = repr([(key, config.get(key)) for key in differing if key != "seed"])
        by_config.setdefault(signature, []).append(index)
    return list(by_config.values()), [key for key in differing if key != "seed"]


def shown(value: int | float | None) -> str:
    """An int as written, a float as the report shows it, a missing value as blank."""
    return "" if value is None else str(value) if isinstance(value, int) else number(value)


def mean_std(values: Sequence[int | float | None]) -> str:
    present = [v for v in values if v is not None and math.isfinite(v)]
    if len(present) < 2:
        return ""
    mean = statistics.mean(present)
    mean_text = shown(int(mean)) if all(isinstance(v, int) for v in present) and float(mean).is_integer() else number(mean)
    return f"{mean_text} ± {number(statistics.stdev(present))}"


def curves_of(runs: Sequence[RunFiles], labels: Sequence[str]) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(run label, variant, metrics rows) per run; a sweep without its own metrics.csv gives one
    per variant (variants/<name>/metrics.csv), the others have variant ''."""
    series = []
    for run, label in zip(runs, labels):
        if run.metrics:
            series.append((label, "", run.metrics))
            continue
        for variant in sorted((run.path / "variants").glob("*/metrics.csv")):
            series.append((label, variant.parent.name, Run(variant.parent).metrics()))
    return [item for item in series if item[2]]


def curve_figures(runs: Sequence[RunFiles], labels: Sequence[str]) -> list[tuple[str, bytes]]:
    """One PNG per per-epoch metric (not epoch), every run's curve on it."""
    from vislab.analysis.plots import plt

    series = curves_of(runs, labels)
    columns = list(dict.fromkeys(key for _, _, rows in series for key in rows[0] if key != "epoch"))
    # Colour tells the variant and line style the run when runs are sweeps; else colour is the run.
    variants = list(dict.fromkeys(variant for _, variant, _ in series))
    styles = ["-", "--", ":", "-."]
    figures = []
    for column in columns:
        figure, axis = plt.subplots(figsize=(5.2, 3.3))
        for label, variant, rows in series:
            points = [(float(row["epoch"]), float(row[column])) for row in rows
                      if row.get(column) not in (None, "") and row.get("epoch") not in (None, "")]
            if not points:
                continue
            if variant:
                axis.plot(*zip(*points), marker="o", markersize=3, label=f"{label} {variant}",
                          color=f"C{variants.index(variant) % 10}", linestyle=styles[labels.index(label) % len(styles)])
            else:
                axis.plot(*zip(*points), marker="o", markersize=3, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(column)
        axis.set_title(column, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        figures.append((column, buffer.getvalue()))
    return figures


def build_comparison(paths: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write compare.html (and compare.csv, plots/) into `out`; returns the page's path.
    Without `out`: runs/compare/<UTC time>-<study>/ beside the first run's study folder."""
    runs = read_runs(paths)
    study = runs[0].study
    run_groups, differing = groups(runs)
    seeds = [run.meta.get("seed", run.config.get("seed")) for run in runs]
    # Column names: 'seed 1' reads better than a time stamp when the seed is all that differs.
    by_seed = len(run_groups) == 1 and len(set(map(str, seeds))) == len(runs)
    labels = [f"seed {seed}" if by_seed else run.path.name for seed, run in zip(seeds, runs)]
    numbers = [numeric_summary(run.summary) for run in runs]
    keys = list(dict.fromkeys(key for found in numbers for key in found))
    keys.sort(key=lambda key: "." in key)  # headline figures first, nested ones (per class, ...) after
    stats_groups = [group for group in run_groups if len(group) > 1]
    group_names = [(" / ".join(f"{key}={flat_config(runs[group[0]].config).get(key)}" for key in differing) or "all runs")
                   + f" (n={len(group)} seeds)" for group in stats_groups]
    rows = []
    for key in keys:
        values = [found.get(key) for found in numbers]
        rows.append({"metric": key, "values": [shown(v) for v in values],
                     "stats": [mean_std([values[i] for i in group]) for group in stats_groups]})

    folder = Path(out) if out is not None else runs[0].path.parent.parent / "compare" / \
        f"{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{study}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VislabError(f"cannot create {folder}: {error.strerror}; choose another --out") from None
    figures = curve_figures(runs, labels)
    for name, png in figures:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        atomic_write(folder / "plots" / f"{safe}.png", png)
    Run(folder).write_csv("compare.csv", [{"metric": row["metric"], **dict(zip(labels, row["values"])),
                                           **dict(zip(group_names, row["stats"]))} for row in rows])
    html = environment().get_template("compare.html.j2").render(
        title=f"vislab compare: {len(runs)} {study} runs", study=study, runs=runs, labels=labels,
        seeds=seeds,
        commits=[run.meta.get("git_commit") or "unknown" for run in runs],
        differing=[(key, [flat_config(run.config).get(key) for run in runs]) for key in differing],
        group_names=group_names, rows=rows,
        figures=[(name, base64.b64encode(png).decode()) for name, png in figures],
        seed_only=len(run_groups) == 1)
    return Run(folder).write_text("compare.html", html)
