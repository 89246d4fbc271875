"""Run named benchmarks and print one table of figures, baselines, ratios and targets.

Each module bench/<name>.py defines `run(quick: bool) -> list[dict]`; each dict is a row
with `name`, `figure`, `unit` and optionally `baseline`, `ratio`, `target`, `met`, `note`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
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
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available()))
    if unknown:
        print(f"bench: unknown benchmark {unknown}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    import torch

    machine = f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"
    rows = []
    for name in args.names or available():
        module = importlib.import_module(f"bench.{name}")
        for row in module.run(quick=args.quick):
            rows.append({"bench": name, "machine": machine, **row})
    print(f"machine: {machine}")
    print(f"{'bench':<10} {'name':<42} {'figure':>12} {'unit':<8} {'baseline':>10} {'ratio':>7} {'target':>10}  met")
    for row in rows:
        print(f"{row['bench']:<10} {row['name']:<42} {_fmt(row.get('figure')):>12} {row.get('unit', ''):<8} "
              f"{_fmt(row.get('baseline')):>10} {_fmt(row.get('ratio')):>7} {_fmt(row.get('target')):>10}  "
              f"{row.get('met', '')}  {row.get('note', '')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    (results / f"{stamp}-{platform.node() or 'host'}.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
