"""report.html for a run folder, built from its files only, so `vislab report RUN_DIR`
rebuilds it anywhere. Self-contained: the PNGs are embedded, no network, no script.

The page reads top to bottom: the data (samples per class, counts per split), the summary,
the study's figures grouped in sections by plot name (a plot no section claims goes to
"Other figures"), the per-epoch table, and the run's config and code version.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislab.errors import VislabError
from vislab.runs import PLOTS, TABLES, Run

# Per study: (section title, plot/table name prefixes, one line saying what to look for).
# A name belongs to the first section with a matching prefix; the data overview comes first.
SECTIONS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "faces": [
        ("Training", ("curves",), "Loss and validation figures per epoch."),
        ("Verification", ("score_histogram", "roc"),
         "Test pair scores of same and different people, and the ROC curve with its AUC."),
        ("Mistakes", ("false_", "worst_mistakes", "random_test_pairs"),
         "The test pairs the model got most wrong (highest-scoring different pairs, lowest-scoring same "
         "pairs), and a random batch for comparison."),
    ],
    "imbalance": [
        ("Training", ("curves", "lr_"), "Loss and dev figures per epoch."),
        ("Per-class results", ("per_class_", "confusion_", "course_"),
         "Precision, recall and F1 per class, and confusion matrices (counts and shares of the true class)."),
        ("Strategy comparison", ("compar",), "The imbalance strategies side by side."),
        ("Attacks", ("epsilon_sweep", "adversarial_examples", "attack_"),
         "Accuracy under FGSM/PGD by perturbation size, and targeted adversarial examples."),
    ],
    "latent": [
        ("Autoencoder", ("ae_", "reconstructions", "classifier_"),
         "Training curves, and test digits (top) above their reconstructions (bottom)."),
        ("Few labels", ("fewlabel", "head_", "accuracy_vs_labels"), "Accuracy from a few labelled digits."),
        ("Latent GAN", ("gan_", "interpolation"),
         "Generated digits, which digits the generator makes, and interpolations between codes."),
        ("Conditional GAN", ("cgan_",), "Row d asks for digit d; per-digit accuracy as judged by the classifier."),
    ],
    "cnn": [
        ("Training curves", ("curves", "sweep_curves", "sweep"), "Loss and accuracy per epoch, per variant."),
        ("Parameters and accuracy", ("accuracy_vs_params",), "Test accuracy against trainable parameters."),
        ("Per class", ("per_class", "confusion_matrix"), "Test accuracy per class."),
        ("Pixel permutations", ("permutations",), "What a permuted image looks like to the network."),
    ],
}
DATA = ("Data", ("data_samples", "data_counts", "data_"), "Sample images per class (or same/different pairs), and how many per split.")
SUMMARY_TABLES = {"latent": ("FID", "fid_")}  # a summary table per study: title, key prefix
MAX_TABLE_ROWS = 30
HEADLINE_WORDS = ("accuracy", "f1", "auc", "fid", "loss")  # a record's columns to show first


@dataclass
class RunFiles:
    """What a run folder holds, read back (also `vislab.load_run`)."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, str]]
    plots: list[Path] = field(default_factory=list)
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> RunFiles:
        from vislab.config import read_yaml_file

        run = Run.open(path)
        config = read_yaml_file(run.path / "config.yaml")
        meta = run.read_json("meta.json") if (run.path / "meta.json").exists() else {}
        summary = run.read_json("summary.json") if (run.path / "summary.json").exists() else {}
        for name, value in (("meta.json", meta), ("summary.json", summary)):
            if not isinstance(value, dict):
                raise VislabError(f"{run.path / name} holds a {type(value).__name__}, not a JSON object; "
                                  "the run folder is damaged")
        tables = {table.stem: run.read_csv(f"{TABLES}/{table.name}") for table in sorted((run.path / TABLES).glob("*.csv"))}
        return cls(run.path, config, meta, summary, run.metrics(),
                   sorted((run.path / PLOTS).glob("*.png")), tables)

    @property
    def study(self) -> str:
        return self.meta.get("study") or self.path.parent.name


def number(value: float) -> str:
    """A float as the report shows it: 4 decimals, or 4 significant digits when tiny or huge."""
    if not math.isfinite(value):
        return str(value)
    value += 0.0  # -0.0 reads as 0.0000, not -0.0000
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"


def flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """[('per_class.cat.recall', '0.8100'), ...] for a nested summary. Lists of records (a
    sweep's variants) are left out: `records` shows them as a table."""
    items: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += flatten(value, name + ".")
        elif isinstance(value, bool) or value is None:
            items.append((name, json.dumps(value)))
        elif isinstance(value, float):
            items.append((name, number(value)))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            continue
        elif isinstance(value, list) and len(json.dumps(value)) > 120:
            items.append((name, json.dumps(value)[:117] + "..."))
        else:
            items.append((name, json.dumps(value) if isinstance(value, list) else str(value)))
    return items


def summary_groups(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary's nested mappings (per_class, before_posthoc, fgsm_accuracy, ...) as small
    tables beside each other, so that the headline figures stay on one screen:
    [{'name': 'per_class', 'items': [('per_class.dev.car.f1', 'dev.car.f1', '0.9827'), ...]}]."""
    return [{"name": key, "items": [(name, name.removeprefix(key + "."), text) for name, text in flatten(value, key + ".")]}
            for key, value in summary.items() if isinstance(value, dict) and value]


def records(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Lists of records in a summary (a sweep's variants) as tables of their scalar fields:
    [{'name': 'variants', 'columns': [...], 'rows': [[(key, text), ...], ...], 'same': [...]}].
    Text fields equal in every record are said once above the table ('same')."""
    found = []
    for key, value in summary.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value for k, v in row.items() if not isinstance(v, (dict, list))))
            same = [(column, value[0].get(column)) for column in columns
                    if isinstance(value[0].get(column), str) and len(value) > 1
                    and all(row.get(column) == value[0][column] for row in value)]
            columns = [column for column in columns if column not in dict(same)]
            columns.sort(key=lambda column: (not isinstance(value[0].get(column), str),  # names, then results
                                             not any(word in column for word in HEADLINE_WORDS)))
            rows = [[(f"{key}.{index}.{column}", flatten({column: row[column]})[0][1] if column in row else "")
                     for column in columns] for index, row in enumerate(value)]
            found.append({"name": key, "columns": columns, "rows": rows, "same": same})
    return found


def embed(path: Path) -> dict[str, str]:
    return {"name": path.stem, "caption": path.stem.replace("_", " "),
            "data": base64.b64encode(path.read_bytes()).decode()}


def table_view(name: str, rows: list[dict[str, str]], folder: Path) -> dict[str, Any]:
    """A CSV table for the page: at most MAX_TABLE_ROWS rows, saying where the rest are."""
    return {"name": name, "caption": name.replace("_", " "), "columns": list(rows[0]) if rows else [],
            "rows": [list(row.values()) for row in rows[:MAX_TABLE_ROWS]],
            "more": max(len(rows) - MAX_TABLE_ROWS, 0), "file": f"{folder.name}/{TABLES}/{name}.csv"}


def sections(files: RunFiles) -> list[dict[str, Any]]:
    """The page's sections of figures and tables, data first and unclaimed ones last."""
    layout = [DATA, *SECTIONS.get(files.study, [])]
    plots = {path.stem: path for path in files.plots}
    tables = dict(files.tables)
    result = []
    for title, prefixes, note in layout:
        mine_plots = sorted((name for name in plots if name.startswith(prefixes)),  # in the prefixes' order
                            key=lambda name: next(i for i, prefix in enumerate(prefixes) if name.startswith(prefix)))
        mine_tables = [name for name in tables if name.startswith(prefixes)]
        if mine_plots or mine_tables:
            result.append({"title": title, "id": title.lower().replace(" ", "-"), "note": note,
                           "plots": [embed(plots.pop(name)) for name in mine_plots],
                           "tables": [table_view(name, tables.pop(name), files.path) for name in mine_tables]})
    if plots or tables:
        result.append({"title": "Other figures and tables", "id": "other", "note": "",
                       "plots": [embed(path) for path in plots.values()],
                       "tables": [table_view(name, rows, files.path) for name, rows in tables.items()]})
    return result


def summary_table(files: RunFiles) -> dict[str, Any] | None:
    """A study's small table of summary keys (latent: the FIDs), or None."""
    if files.study not in SUMMARY_TABLES:
        return None
    title, prefix = SUMMARY_TABLES[files.study]
    rows = [(key, number(value) if isinstance(value, float) else str(value))
            for key, value in files.summary.items() if key.startswith(prefix) and isinstance(value, (int, float))]
    return {"title": title, "rows": rows} if rows else None


def is_number(text: object) -> bool:
    """Whether a cell holds a number (right-aligned on the page)."""
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True


def cell(value: object) -> str:
    """A CSV cell for the page: decimals shortened by `number`, anything else as written."""
    text = str(value)
    if is_number(text) and "," not in text and any(mark in text for mark in ".eE"):
        return number(float(text))
    return text


def breakable(text: object):
    """A column name that may wrap after its underscores (narrow headers over wide tables)."""
    from markupsafe import Markup, escape

    return Markup(str(escape(str(text))).replace("_", "_<wbr>"))


def environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("vislab.analysis", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["cell"] = cell
    env.filters["breakable"] = breakable
    env.tests["number"] = is_number
    return env


def build_report(path: str | Path) -> Path:
    """Write <run>/report.html; returns its path."""
    files = RunFiles.read(path)
    table = summary_table(files)  # its rows leave the main summary table
    html = environment().get_template("report.html.j2").render(
        title=f"vislab {files.study}: {files.path.name}",
        files=files, summary=flatten({k: v for k, v in files.summary.items() if not isinstance(v, dict)
                                      and not (table and any(k == key for key, _ in table["rows"]))}),
        summary_groups=summary_groups(files.summary), records=records(files.summary),
        sections=sections(files), summary_table=table,
        config_yaml=(files.path / "config.yaml").read_text(),
    )
    Run(files.path).write_text("report.html", html)
    return files.path / "report.html"
