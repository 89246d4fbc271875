"""The `vislab` command. Each subcommand parses into a study config and calls the study.

Errors a user can fix (`VislabError`) print as one line with exit status 2; `--debug` shows
the traceback instead. The last line `vislab run` prints on stdout is the run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vislab.errors import VislabError

EXAMPLES = {
    "run": """examples:
  vislab run cnn --model-name Q1_4 --epochs 15
  vislab run cnn --data-root ../shared/data --config configs/cnn/tutorial.yaml --seed 1
  vislab run cnn --resume runs/cnn/20261123-101500-Q1_4      # continue from last.ckpt""",
    "eval": """examples:
  vislab eval cnn --checkpoint runs/cnn/20261123-101500-Q1_4/checkpoints/best.ckpt
  vislab eval cnn --checkpoint runs/cnn/20261123-101500-Q1_4 --data-root ../shared/data""",
    "config": """examples:
  vislab config cnn > my.yaml       # edit, then: vislab run cnn --config my.yaml""",
    "models": """examples:
  vislab models --study cnn
  vislab models --format csv > models.csv""",
    "report": """examples:
  vislab report runs/cnn/20261123-101500-Q1_4""",
    "tune": """examples:
  vislab tune cnn --trials 20 --space configs/cnn/tune-q1.yaml --out runs/tune/q1
  vislab tune cnn --trials 20 --space configs/cnn/tune-q1.yaml --out runs/tune/q1   # 2nd worker, same study
  vislab tune cnn --trials 40 --space configs/cnn/tune-q1.yaml --storage postgresql+psycopg://localhost/vislab
  vislab run cnn --config runs/tune/q1/best.yaml     # the best trial's config""",
    "compare": """examples:
  vislab compare runs/cnn/20261123-101500-Q1_4 runs/cnn/20261123-103000-Q1_4   # two seeds: mean +- std
  vislab compare runs/faces/* --out /tmp/faces-compare""",
    "demo": """examples:
  vislab demo                 # every study on small built-in data, in a few minutes on a CPU
  vislab demo --out /tmp/demo""",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [word for word in argv if word != "--debug"]
    if argv[:1] == ["bench"]:  # everything after `bench` is the benchmark runner's
        return _cmd_bench(argv[1:], debug=debug)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if extra and args.command not in ("run", "eval", "tune"):
            raise VislabError(f"unexpected arguments: {' '.join(extra)} (see `vislab {args.command} --help`)")
        return args.handler(args, extra) or 0
    except VislabError as error:
        if debug:
            raise
        print(f"vislab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislab: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vislab", allow_abbrev=False,
        description="Small-image deep-learning studies (faces, imbalance, latent, cnn) as commands.",
        epilog="Add --debug to any command for a traceback instead of a one-line error.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=EXAMPLES.get(name),
                                  formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", "Train and evaluate one study; prints the run folder last.", _cmd_run)
    run.add_argument("study", help="faces, imbalance, latent or cnn")
    run.add_argument("--config", metavar="FILE.yaml", help="a YAML file of config values (see `vislab config STUDY`)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoints/last.ckpt")
    run.usage = "vislab run STUDY [--config FILE.yaml] [--resume RUN_DIR] [--KEY=VALUE ...]"

    evaluate = command("eval", "Evaluate a checkpoint into a new run folder (no training).", _cmd_eval)
    evaluate.add_argument("study")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="a .ckpt file or a run folder (its best.ckpt)")
    evaluate.add_argument("--config", metavar="FILE.yaml", help="YAML config values applied over the checkpoint's")
    evaluate.usage = "vislab eval STUDY --checkpoint PATH [--KEY=VALUE ...]"

    config = command("config", "Print a study's full default config as commented YAML.", _cmd_config)
    config.add_argument("study")

    models = command("models", "List registered models with parameter and multiply-accumulate counts.", _cmd_models)
    models.add_argument("--study", help="only this study's models")
    models.add_argument("--format", choices=("table", "csv"), default="table")

    report = command("report", "Rebuild a run folder's report.html from its files.", _cmd_report)
    report.add_argument("run_dir", metavar="RUN_DIR")

    tune = command("tune", "Search hyperparameters with Optuna; each trial is a run folder.", _cmd_tune)
    tune.add_argument("study")
    tune.add_argument("--trials", type=int, required=True, help="complete or pruned trials the study should hold")
    tune.add_argument("--space", metavar="FILE.yaml", help="search space (default: lr and weight_decay, log scale)")
    tune.add_argument("--out", metavar="DIR", help="tune folder (default: runs/tune/STUDY_NAME)")
    tune.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study database "
                      "(default: sqlite:///DIR/study.db); workers on one URL and study name share the study")
    tune.add_argument("--study-name", metavar="NAME", help="Optuna study name (default: STUDY-tune)")
    tune.add_argument("--config", metavar="FILE.yaml", help="config values every trial starts from")
    tune.add_argument("--metric", help="metrics.csv column to optimise (default: the space file's, or the study's)")
    tune.add_argument("--direction", choices=("maximize", "minimize"))
    tune.add_argument("--pruner", choices=("median", "hyperband", "none"), help="default: the space file's, or median")
    tune.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                      help="trial heartbeat; a trial silent for twice this is failed and retried (default 60)")
    tune.add_argument("--max-failures", type=int, metavar="N", help="stop this worker after N failed trials "
                      "(default: max(3, trials))")
    tune.add_argument("--sampler-seed", type=int, metavar="N", help="seed of the TPE sampler")
    tune.usage = "vislab tune STUDY --trials N [--space FILE.yaml] [--out DIR] [--storage URL] [--study-name NAME] [--KEY=VALUE ...]"

    compare = command("compare", "Compare runs of one study on one page (mean +- std over seeds).", _cmd_compare)
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", metavar="DIR", help="folder for compare.html (default: runs/compare/<time>-<study>)")

    demo = command("demo", "Run every study end to end on small built-in data.", _cmd_demo)
    demo.add_argument("--out", default="runs", help="folder for the demo run folders (default: runs)")

    command("bench", "Run benchmarks from a source checkout (`vislab bench --help`: python -m bench).", None)
    return parser


# ---------------------------------------------------------------------------------------------
# run / eval: shared by the command line and the Python API (vislab.run)


def run_study(study: str, *, overrides: Sequence[str] = (), yaml_file: str | None = None,
              resume_dir: str | None = None, name: str | None = None) -> tuple[dict[str, Any], Path]:
    """Train and evaluate `study` into a run folder; returns (summary, run folder)."""
    from vislab.config import load_config, read_yaml_file, to_yaml
    from vislab.loggers import attach_logger, check_logger
    from vislab.runs import Run, is_writer, load_checkpoint
    from vislab.studies import get_study

    module = get_study(study)
    resume = None
    if resume_dir is not None:
        run = Run.open(resume_dir)
        _check_resumable(run, study, yaml_file)
        saved = run.path / "config.yaml"
        base = read_yaml_file(saved)
        config = load_config(module.Config, base=base, base_source=str(saved), overrides=overrides)
        if isinstance(base, dict) and base.get("epochs") is not None and config.epochs != base["epochs"]:
            raise VislabError(f"--resume continues {run.path} as configured, for {base['epochs']} epochs (its "
                              f"learning-rate schedule is built for them); to train for {config.epochs}, "
                              f"start a new run")
        check_logger(config)
        resume = load_checkpoint(run.checkpoint_path("last.ckpt"))
        run = _create_run(config, study, "", existing=run)
        if is_writer():
            run.remove_partial_files()  # left by a process killed mid-write
    else:
        config = load_config(module.Config, yaml_file=yaml_file, overrides=overrides)
        check_logger(config)  # before the run folder exists
        run = _create_run(config, study, name or module.run_name(config))
    _set_threads(config)
    run.write_config(to_yaml(config))
    run.start_meta(seed=config.seed, study=study, extra={"resumed": resume is not None,
                                                         "processes": config.devices * config.num_nodes})
    with _naming_checkpoint(resume, run.checkpoint_path("last.ckpt")), attach_logger(run, config):
        summary = _guarded(run, lambda: module.run(config, run, resume=resume), fresh=resume is None,
                           study=study)
    _finish(run, summary)
    return summary, run.path


def _check_resumable(run, study: str, yaml_file: str | None) -> None:
    """Refuse, before anything is written, a resume that cannot work."""
    if yaml_file is not None:
        raise VislabError("--config cannot be combined with --resume: a resumed run keeps its config.yaml; "
                          "change single values with --key=value")
    meta = run.read_json("meta.json") if (run.path / "meta.json").exists() else {}
    saved_study = meta.get("study") if isinstance(meta, dict) else None
    saved_study = saved_study or run.study
    if saved_study != study:
        raise VislabError(f"{run.path} is a {saved_study} run; continue it with "
                          f"`vislab run {saved_study} --resume {run.path}`")
    if not run.checkpoint_path("last.ckpt").exists():
        raise VislabError(f"{run.checkpoint_path('last.ckpt')} not found: the run stopped before its first "
                          "epoch ended, so there is nothing to resume; start it again")


@contextlib.contextmanager
def _naming_checkpoint(checkpoint: dict[str, Any] | None, path):
    """Studies say 'the checkpoint' and index it directly; name the file, and turn a missing
    entry into a one-line error (a hand-made or foreign checkpoint), not a KeyError."""
    try:
        yield
    except VislabError as error:
        if checkpoint is None or "the checkpoint" not in str(error):
            raise
        raise VislabError(str(error).replace("the checkpoint", f"checkpoint {path}", 1)) from None
    except KeyError as error:
        key = error.args[0] if error.args else None
        if checkpoint is None or not isinstance(key, str) or key in checkpoint:
            raise
        raise VislabError(f"checkpoint {path} has no {key!r} entry; pass a checkpoint that vislab saved "
                          "for this study") from None


def evaluate_checkpoint(study: str, checkpoint_path: str, *, overrides: Sequence[str] = (),
                        yaml_file: str | None = None) -> tuple[dict[str, Any], Path]:
    from vislab.config import load_config, to_yaml
    from vislab.runs import Run, load_checkpoint
    from vislab.studies import get_study

    module = get_study(study)
    checkpoint = load_checkpoint(checkpoint_path)
    base = checkpoint.get("config")
    if not isinstance(base, dict):
        raise VislabError(f"{checkpoint_path} holds no config; is it a vislab {study} checkpoint?")
    if not isinstance(checkpoint.get("model"), dict):
        raise VislabError(f"{checkpoint_path} holds no model weights ('model' entry); is it a vislab {study} "
                          "checkpoint?")
    config = load_config(module.Config, base=base, base_source=f"the config in {checkpoint_path}",
                         overrides=overrides, yaml_file=yaml_file)
    run = _create_run(config, study, "eval-" + module.run_name(config))
    _set_threads(config)
    run.write_config(to_yaml(config))
    run.start_meta(seed=config.seed, study=study, extra={"checkpoint": str(checkpoint_path)})
    with _naming_checkpoint(checkpoint, checkpoint_path):
        summary = _guarded(run, lambda: module.evaluate(config, checkpoint, run), fresh=True, study=study)
    _finish(run, summary)
    return summary, run.path


def _create_run(config, study: str, name: str, existing=None):
    """A new run folder, or `existing` (a resumed run). In a distributed run (devices x num_nodes
    > 1) Fabric starts the other processes here, before anything is written (each re-runs this
    command; under torchrun they exist already); rank 0 makes the folder and tells the others
    its path, so that there is one folder per run."""
    from vislab.runs import Run

    if config.devices * config.num_nodes == 1:
        return existing or Run.create(config.out, study, name)
    from vislab.engine import make_fabric

    fabric = make_fabric(config)
    if existing is not None:
        return existing
    path = str(Run.create(config.out, study, name).path) if fabric.is_global_zero else None
    return Run(fabric.broadcast(path, src=0))


def _set_threads(config) -> None:
    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)


def _guarded(run, work, *, fresh: bool, study: str):
    """Run `work`; on failure leave nothing half-written: a fresh run folder with no checkpoint
    is removed, anything else is marked failed or interrupted in meta.json."""
    from vislab.runs import is_writer

    try:
        return work()
    except KeyboardInterrupt as error:
        with contextlib.suppress(VislabError):  # best effort: the disk may be what failed
            run.finish_meta("interrupted")
        _report_anyway(run)
        from vislab.runs import load_checkpoint

        where = f"{error}; " if str(error) else ""
        epoch = None
        if run.checkpoint_path("last.ckpt").exists():
            with contextlib.suppress(VislabError):
                epoch = load_checkpoint(run.checkpoint_path("last.ckpt")).get("epoch")
        if epoch is not None:
            print(f"vislab: interrupted ({where}checkpoints/last.ckpt holds epoch {epoch}); "
                  f"continue with: vislab run {study} --resume {run.path}", file=sys.stderr)
        else:
            print(f"vislab: interrupted ({where}no epoch finished, so there is nothing to resume: "
                  f"start the run again)", file=sys.stderr)
        raise
    except BaseException as error:
        from vislab.engine import TrainingDiverged

        # A diverged run is kept (its metrics show where it went wrong); bad input is not.
        if fresh and not run.has_checkpoint() and isinstance(error, VislabError) \
                and not isinstance(error, TrainingDiverged) and is_writer():
            shutil.rmtree(run.path, ignore_errors=True)
            with contextlib.suppress(OSError):  # the <out>/<study>/ folder, if this made it empty
                run.path.parent.rmdir()
        else:
            with contextlib.suppress(VislabError):  # best effort: the disk may be what failed
                run.finish_meta("failed", error=str(error).splitlines()[0] if str(error) else type(error).__name__)
            _report_anyway(run)
        raise


def _report_anyway(run) -> None:
    """A failed or interrupted run's report.html: its status, and the epochs and plots it got to."""
    from vislab.analysis.report import build_report
    from vislab.runs import is_writer

    if not is_writer():
        return
    with contextlib.suppress(Exception):  # the run's own error is the one to show
        build_report(run.path)


def _finish(run, summary: dict[str, Any]) -> None:
    from vislab.analysis.report import build_report
    from vislab.runs import is_writer

    if not is_writer():  # the other processes of a distributed run: rank 0 writes the files
        return
    run.write_summary(summary)
    run.finish_meta("completed")
    build_report(run.path)


def _cmd_run(args, extra: list[str]) -> int:
    from vislab.config import split_overrides

    from vislab.runs import is_writer

    _, path = run_study(args.study, overrides=split_overrides(extra), yaml_file=args.config,
                        resume_dir=args.resume)
    if is_writer():  # one path printed however many processes ran
        print(path)
    return 0


def _cmd_eval(args, extra: list[str]) -> int:
    from vislab.config import split_overrides

    _, path = evaluate_checkpoint(args.study, args.checkpoint, overrides=split_overrides(extra),
                                  yaml_file=args.config)
    print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# the other commands


def _cmd_config(args, extra: list[str]) -> int:
    from vislab.config import commented_yaml
    from vislab.studies import get_study

    module = get_study(args.study)
    print(f"# vislab {args.study} config: defaults. Use with --config FILE.yaml, or override any key\n"
          f"# on the command line as --key=value (nested keys dotted: --model.dropout=0.3).")
    print(commented_yaml(module.Config()), end="")
    return 0


def _cmd_models(args, extra: list[str]) -> int:
    import csv

    from vislab.models.registry import count_macs, count_parameters, list_models, model_entry

    if args.study is not None:
        from vislab.studies import get_study

        get_study(args.study)  # a clear error for a study name typo
    rows = []
    for name in list_models(study=args.study):
        entry = model_entry(name)
        model = entry.build()
        rows.append({"name": name, "study": entry.study, "params": count_parameters(model),
                     "macs": count_macs(model, entry.example_inputs(1)),
                     "input": "x".join(map(str, entry.input_shape)), "summary": entry.summary})
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["name"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    print(f"{'name':<16}{'study':<11}{'params':>12}{'MACs':>15}  {'input':<10} summary")
    for row in rows:
        print(f"{row['name']:<16}{row['study']:<11}{row['params']:>12,}{row['macs']:>15,}  "
              f"{row['input']:<10} {row['summary']}")
    return 0


def _cmd_report(args, extra: list[str]) -> int:
    from vislab.analysis.report import build_report
    from vislab.runs import Run

    run = Run.open(args.run_dir)
    print(build_report(run.path))
    return 0


def _cmd_tune(args, extra: list[str]) -> int:
    from vislab.config import split_overrides
    from vislab.studies import get_study
    from vislab.tune import load_space, tune

    get_study(args.study)  # a clear error for a study name typo
    space = load_space(args.study, args.space, metric=args.metric, direction=args.direction, pruner=args.pruner)
    name = args.study_name or f"{args.study}-tune"
    if args.heartbeat < 1:
        raise VislabError(f"--heartbeat {args.heartbeat}: give at least 1 second")
    out = tune(args.study, trials=args.trials, space=space, out=Path(args.out or Path("runs") / "tune" / name),
               storage=args.storage, study_name=name, yaml_file=args.config, extra=split_overrides(extra),
               heartbeat_seconds=args.heartbeat, max_failures=args.max_failures, seed=args.sampler_seed)
    print(out)
    return 0


def _cmd_compare(args, extra: list[str]) -> int:
    from vislab.analysis.compare import build_comparison

    print(build_comparison(args.run_dirs, args.out))
    return 0


def _cmd_demo(args, extra: list[str]) -> int:
    from vislab.engine import log
    from vislab.studies import available_studies, get_study

    results = []
    for study in available_studies():
        module = get_study(study)
        overrides = [f"{key}={value}" for key, value in module.DEMO.items()] + [f"out={args.out}"]
        log(f"== demo: {study}")
        started = time.perf_counter()
        summary, path = run_study(study, overrides=overrides, name="demo")
        results.append((study, time.perf_counter() - started, path))
    print("\nstudy       seconds  report")
    for study, seconds, path in results:
        print(f"{study:<11} {seconds:>7.1f}  {path / 'report.html'}")
    return 0


def _cmd_bench(argv: list[str], *, debug: bool = False) -> int:
    """`python -m bench ARGS`: the runner lives in the repository's bench/, beside src/."""
    checkout = Path(__file__).resolve().parents[2]
    try:
        if (checkout / "bench" / "__main__.py").is_file() and str(checkout) not in sys.path:
            sys.path.insert(0, str(checkout))
        try:
            from bench.__main__ import main as bench_main
        except ImportError:
            raise VislabError(f"vislab bench needs a source checkout with bench/ (looked in {checkout}); "
                              "run `python -m bench` from the repository instead") from None
        return bench_main(argv)
    except VislabError as error:
        if debug:
            raise
        print(f"vislab: error: {error}", file=sys.stderr)
        return 2
