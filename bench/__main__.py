"""Run named benchmarks and print one table of figures, baselines, ratios and targets.

Each module bench/<name>.py defines `run(quick: bool) -> list[dict]`; each dict is a row
with `name`, `figure`, `unit` and optionally `baseline`, `ratio`, `target`, `met`, `note`,
and for timed figures `min`, `max` and `repeats` (the figure is the median of the repeats).
The table also goes to bench/results/<UTC time>-<host>.md and .json (`--results DIR` elsewhere).

speed: pipeline attacks cache target precision memory flops; accuracy targets: cnn faces
imbalance latent (hours on the real data; `python -m bench` alone runs every module).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--results", metavar="DIR", default=str(HERE / "results"),
                        help="folder for <time>-<host>.md and .json (default: bench/results)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available()))
    if unknown:
        print(f"bench: unknown benchmark {unknown}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    import torch

    machine = machine_line(torch)
    print(f"machine: {machine}", flush=True)
    rows = []
    for name in args.names or available():
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        for row in module.run(quick=args.quick):
            rows.append({"bench": name, "machine": machine, **row})
        print(f"bench {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    table = markdown(rows, machine, quick=args.quick)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = results / f"{stamp}-{platform.node() or 'host'}"
    base.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str))
    base.with_suffix(".md").write_text(table)
    print(f"written: {base}.md and .json", file=sys.stderr)
    return 0


def machine_line(torch) -> str:
    """Cores, CPU model, torch version, intra-op threads, and the load average at the start
    (other jobs on the machine inflate absolute times: compare ratios from the same run)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load}")


def markdown(rows: list[dict], machine: str, *, quick: bool) -> str:
    """The rows as a Markdown table, headed by the machine and the date."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# vislab bench{' --quick' if quick else ''}, {when}", "", f"Machine: {machine}.", "",
             "Figures are medians of `n` repeats (min..max); speed ratios are taken in the same run.", "",
             "| bench | figure | value | unit | min..max | n | baseline | ratio | target | met | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        span = f"{_fmt(row.get('min'))}..{_fmt(row.get('max'))}" if row.get("min") is not None else ""
        cells = [row["bench"], row["name"], _fmt(row.get("figure")), row.get("unit", ""), span,
                 _fmt(row.get("repeats")), _fmt(row.get("baseline")), _fmt(row.get("ratio")),
                 _fmt(row.get("target")), _fmt(row.get("met")), str(row.get("note", ""))]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
