"""report.html for a run folder, built from its files only, so `vislab report RUN_DIR`
rebuilds it anywhere. Self-contained: the PNGs are embedded, no network, no script."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislab.errors import VislabError
from vislab.runs import PLOTS, TABLES, Run


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


def flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """[('per_class.cat.recall', '0.81'), ...] for a nested summary."""
    items: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += flatten(value, name + ".")
        elif isinstance(value, float):
            items.append((name, f"{value:.4f}"))
        elif isinstance(value, list) and len(json.dumps(value)) > 120:
            items.append((name, json.dumps(value)[:117] + "..."))
        else:
            items.append((name, json.dumps(value) if isinstance(value, list) else str(value)))
    return items


def build_report(path: str | Path) -> Path:
    """Write <run>/report.html; returns its path."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    files = RunFiles.read(path)
    environment = Environment(loader=PackageLoader("vislab.analysis", "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True))
    template = environment.get_template("report.html.j2")
    plots = [{"name": p.stem.replace("_", " "), "data": base64.b64encode(p.read_bytes()).decode()} for p in files.plots]
    html = template.render(
        title=f"vislab {files.meta.get('study', files.path.parent.name)}: {files.path.name}",
        files=files, summary=flatten(files.summary), plots=plots,
        config_yaml=(files.path / "config.yaml").read_text(),
    )
    Run(files.path).write_text("report.html", html)
    return files.path / "report.html"
