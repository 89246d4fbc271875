"""report.html's structure, `vislab compare` (mean +- std over two seeds of a tiny built-in
run, and its errors), the data overview, and the TensorBoard logger's error without the package."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from vislab.analysis.compare import build_comparison
from vislab.analysis.report import SECTIONS, build_report, number
from vislab.cli import main, run_study
from vislab.runs import Run

TINY_CNN = ["data_root=builtin", "model_name=Q1_1", "epochs=2", "num_threads=1"]
PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny cnn runs that differ only in the seed."""
    out = tmp_path_factory.mktemp("report-runs")
    return [run_study("cnn", overrides=[*TINY_CNN, f"seed={seed}", f"out={out}"])[1] for seed in (0, 1)]


def fake_run(root: Path, study: str, plots: list[str], *, seed: int = 0, summary: dict | None = None,
             config: dict | None = None) -> Path:
    """A run folder written by hand: config, meta, summary, tiny PNGs and one table."""
    run = Run.create(root, study, "fake")
    run.write_config(yaml.safe_dump({"seed": seed, "lr": 0.1, **(config or {})}))
    run.write_json("meta.json", {"study": study, "status": "completed", "seed": seed, "git_commit": "abc123def456"})
    run.write_summary(summary if summary is not None else {"accuracy": 0.5 + seed / 10})
    for name in plots:
        (run.path / "plots").mkdir(exist_ok=True)
        (run.path / "plots" / f"{name}.png").write_bytes(PNG)
    run.table("data_counts", [{"split": "train", "size": 3}])
    for epoch in (1, 2):
        run.append_metrics({"epoch": epoch, "train_loss": 1.0 / epoch + seed, "val_acc": 0.1 * epoch})
    return run.path


def section_of(html: str, plot: str) -> str:
    """The title of the <h2> section a plot's figure sits in."""
    where = html.index(f'id="plot-{plot}"')
    return re.findall(r"<h2 id=\"[^\"]+\">([^<]+)</h2>", html[:where])[-1]


# ---------------------------------------------------------------------------------------------
# report.html


def test_report_of_a_real_run(two_seeds: list[Path]) -> None:
    run_dir = two_seeds[0]
    html = (run_dir / "report.html").read_text()
    meta = json.loads((run_dir / "meta.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    plots = sorted((run_dir / "plots").glob("*.png"))
    # the data first, every plot embedded, nothing fetched and no script
    assert {"data_samples.png", "data_counts.png"} <= {p.name for p in plots}
    assert html.index('id="data"') < html.index('id="summary"') < html.index('id="epochs"') < html.index('id="config"')
    assert html.count('src="data:image/png;base64,') == len(plots)
    for plot in plots:
        assert base64.b64encode(plot.read_bytes()).decode() in html
    assert "<script" not in html and not re.search(r"(src|href)=\"https?:", html)
    # seed, code version, config, summary figures, the per-epoch table, the data counts table
    assert meta["git_commit"] and f'<code id="commit">{meta["git_commit"]}</code>' in html
    assert f'seed <span id="seed">{meta["seed"]}</span>' in html
    assert "model_name: Q1_1" in html
    assert f'data-key="test_accuracy">{number(summary["test_accuracy"])}</td>' in html
    assert html.count("<tr>") >= len(Run(run_dir).metrics()) + 1
    assert 'data-table="data_counts"' in html
    # cnn figures land in their sections
    assert section_of(html, "curves") == "Training curves"
    assert section_of(html, "per_class_accuracy") == "Per class"
    assert section_of(html, "data_samples") == "Data"


@pytest.mark.parametrize("study", sorted(SECTIONS))
def test_plots_are_grouped_by_name_and_unknown_ones_go_to_other(study: str, tmp_path: Path) -> None:
    known = {"faces": "roc", "imbalance": "confusion_test", "latent": "cgan_samples", "cnn": "accuracy_vs_params"}[study]
    title = next(title for title, prefixes, _ in SECTIONS[study] if known.startswith(prefixes))
    run_dir = fake_run(tmp_path, study, ["data_counts", "data_samples", known, "zz_something_new"])
    html = build_report(run_dir).read_text()
    assert section_of(html, known) == title
    assert section_of(html, "zz_something_new") == "Other figures and tables"
    assert section_of(html, "data_samples") == "Data"
    assert html.index('id="plot-data_samples"') < html.index('id="plot-data_counts"')  # samples, then counts


def test_long_tables_are_cut_and_say_where_the_rest_is(tmp_path: Path) -> None:
    run_dir = fake_run(tmp_path, "cnn", [])
    Run(run_dir).table("sweep", [{"name": f"variant{i}", "accuracy": i / 100} for i in range(45)])
    html = build_report(run_dir).read_text()
    assert "variant29" in html and "variant30" not in html
    assert "15 more rows in" in html and "tables/sweep.csv" in html


def test_data_overview_counts_every_split(two_seeds: list[Path]) -> None:
    rows = Run(two_seeds[0]).read_csv("tables/data_counts.csv")
    config = yaml.safe_load((two_seeds[0] / "config.yaml").read_text())
    assert [row["split"] for row in rows] == ["train", "validation", "test"]
    for row in rows:  # the class counts add up to the split size
        assert sum(int(row[name]) for name in row if name not in ("split", "size", "note")) == int(row["size"])
    summary = json.loads((two_seeds[0] / "summary.json").read_text())
    assert int(rows[0]["size"]) == summary["train_images"]
    assert config["data_root"] == "builtin"


# ---------------------------------------------------------------------------------------------
# vislab compare


def test_compare_two_seeds_gives_mean_and_std(two_seeds: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare"
    assert main(["compare", *map(str, two_seeds), "--out", str(out)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == out / "compare.html"
    html = page.read_text()
    values = [json.loads((run / "summary.json").read_text())["test_accuracy"] for run in two_seeds]
    expected = f"{number(statistics.mean(values))} ± {number(statistics.stdev(values))}"
    assert f'data-stat="test_accuracy">{expected}</td>' in html
    assert "differ only in their seed" in html and "seed 0" in html and "seed 1" in html
    # one overlaid figure per per-epoch metric
    columns = [key for key in Run(two_seeds[0]).metrics()[0] if key != "epoch"]
    assert sorted(p.stem for p in (out / "plots").glob("*.png")) == sorted(columns)
    assert html.count('src="data:image/png;base64,') == len(columns)
    assert "<script" not in html
    rows = Run(out).read_csv("compare.csv")
    assert next(row for row in rows if row["metric"] == "test_accuracy")["all runs (n=2 seeds)"] == expected


def test_compare_without_seed_only_groups_gives_no_mean(tmp_path: Path) -> None:
    first = fake_run(tmp_path, "faces", [], seed=0, config={"lr": 0.1})
    second = fake_run(tmp_path, "faces", [], seed=1, config={"lr": 0.2})
    html = build_comparison([first, second], tmp_path / "out").read_text()
    assert "±" not in html.split('id="metrics"')[1]
    assert "<td>lr</td><td>0.1</td><td>0.2</td>" in html


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("one", "at least two run folders"),
    ("mixed", "runs of different studies cannot be compared"),
    ("twice", "is given more than once"),
    ("not_a_run", "not a vislab run folder"),
])
def test_compare_errors_exit_2(case: str, message: str, tmp_path: Path, capsys) -> None:
    cnn = fake_run(tmp_path, "cnn", [])
    other = {"missing": [str(tmp_path / "nope")], "one": [], "mixed": [str(fake_run(tmp_path, "faces", []))],
             "twice": [str(cnn)], "not_a_run": [str(tmp_path)]}[case]
    assert main(["compare", str(cnn), *other, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# --logger=tensorboard


def test_tensorboard_logger_without_the_package_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec  # the package hidden, whether or not it is installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real_find_spec(name, *a))
    assert main(["run", "cnn", "--data-root=builtin", "--logger=tensorboard", f"--out={tmp_path}"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


def test_tensorboard_logger_writes_each_epoch(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[dev]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = run_study("cnn", overrides=[*TINY_CNN, "logger=tensorboard", f"out={tmp_path}"])
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    rows = Run(run_dir).metrics()
    assert [event.step for event in events.Scalars("val_acc")] == [int(row["epoch"]) for row in rows]
    assert [event.value for event in events.Scalars("val_acc")] == pytest.approx([float(r["val_acc"]) for r in rows],
                                                                                 rel=1e-5)


def test_compare_lines_up_sweep_variants_by_name_and_old_runs_by_defaults(tmp_path: Path) -> None:
    variants = [{"model_name": "A", "test_accuracy": 0.5}, {"model_name": "B", "test_accuracy": 0.7}]
    first = fake_run(tmp_path, "cnn", [], seed=0, summary={"variants": variants})
    second = fake_run(tmp_path, "cnn", [], seed=1, summary={"variants": variants[::-1]},
                      config={"logger": "none"})  # a key the first run's config lacks, at its default
    html = build_comparison([first, second], tmp_path / "out").read_text()
    assert "differ only in their seed" in html
    assert 'data-stat="variants[A].test_accuracy">0.5000 ± 0.0000</td>' in html


def test_a_failed_run_still_gets_its_report(tmp_path: Path, monkeypatch) -> None:
    from vislab.studies import get_study

    def failing(config, run, resume=None):
        run.append_metrics({"epoch": 1, "train_loss": 0.5})
        run.save_checkpoint("last.ckpt", {"epoch": 1})
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(get_study("cnn"), "run", failing)
    with pytest.raises(RuntimeError):
        run_study("cnn", overrides=[*TINY_CNN, f"out={tmp_path}"])
    (run_dir,) = (tmp_path / "cnn").iterdir()
    html = (run_dir / "report.html").read_text()
    assert 'class="status-failed">failed</span> (disk on fire)' in html
    assert 'id="epochs"' in html and "No summary.json" in html
