"""The benchmark runner: `--quick` works for every speed benchmark and writes the rows other
tools read. No figure is checked against a target here: benchmarks are not tests.

All quick modes use built-in or generated data, so no test here needs ../shared/data; the
accuracy modules (cnn, faces, imbalance, latent) train whole studies and are left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEED = ["pipeline", "attacks", "cache", "precision", "flops", "target", "memory"]
FIELDS = {"name", "figure", "unit", "baseline", "ratio", "target", "met"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `python -m bench <every speed benchmark> --quick` (one process: torch loads once);
    target and memory on the tiny Q1_1 run only, to keep this under a minute."""
    folder = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "VISLAB_BENCH_STUDIES": "cnn-Q1_1",
           "VISLAB_CACHE": str(folder / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bench", *SPEED, "--quick", "--json", str(folder / "rows.json"),
                           "--results", str(folder / "results")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, json.loads((folder / "rows.json").read_text()), done.stdout


@pytest.mark.parametrize("name", SPEED)
def test_quick_rows_carry_the_fields_other_tools_read(quick, name):
    _, rows, _ = quick
    mine = [row for row in rows if row["bench"] == name]
    assert mine, f"{name} produced no row"
    for row in mine:
        assert FIELDS <= set(row), f"{row['name']}: missing {FIELDS - set(row)}"
        assert isinstance(row["figure"], (int, float)) and row["figure"] >= 0, row
        assert row["met"] in (True, False, None), row
        if row["target"] is not None:
            assert isinstance(row["met"], bool), row
        if row.get("repeats", 1) > 1:  # a timed figure: the median lies within its range
            assert row["min"] <= row["figure"] <= row["max"], row
            assert row["repeats"] >= 3, row


def test_quick_writes_the_table_as_markdown_and_json_with_the_machine(quick):
    folder, rows, stdout = quick
    written = sorted(path.suffix for path in (folder / "results").iterdir())
    assert written == [".json", ".md"]
    table = next((folder / "results").glob("*.md")).read_text()
    assert "cores" in table and "torch" in table and "threads" in table
    for row in rows:
        assert row["name"] in table
    assert json.loads(next((folder / "results").glob("*.json")).read_text()) == rows
    assert "machine:" in stdout


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    from bench._common import ratio_row

    row = ratio_row("x", ours=[1.0, 2.0, 4.0], theirs=[3.0, 2.0, 4.0], target=1.0)
    assert (row["figure"], row["min"], row["max"], row["repeats"]) == (1.0, 1.0, 3.0, 3)
    assert row["baseline"] == 3.0 and row["met"] is True


def test_vislab_bench_passes_through_and_rejects_an_unknown_benchmark(capsys):
    from vislab.cli import main

    assert main(["bench", "no-such-benchmark"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
