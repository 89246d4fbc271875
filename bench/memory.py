"""Peak memory (figure 7): the largest resident set (max RSS) of each study's default run.

    flock /tmp/vislab-heavy.lock python -m bench memory    # every default run on the real data: hours
    python -m bench memory --quick                          # tiny runs on built-in data

Each run is `python -m vislab run STUDY ...` in a child process, started by a small Python
wrapper that reports `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` after the run exits: the
peak of that one run, whatever ran before it. Target: <= 4 GiB. Runs as in `target`, without
Q1_1 unless named (`VISLAB_BENCH_STUDIES` picks them). --quick measures the tiny Q1_1 run only:
a tiny run measures mostly torch itself, and each run is a fresh process (about 20 s of the
quick mode's 3-minute budget each).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from bench._common import chosen_runs, row, run_overrides

GIB = 1024**3
# Runs `argv` as a child, then prints its peak RSS in bytes (Linux reports ru_maxrss in KiB).
WRAPPER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"peak": peak, "code": done.returncode, "seconds": time.perf_counter() - started,
                  "error": done.stderr.strip().splitlines()[-1:] if done.returncode else []}))
"""


def peak_rss(argv: list[str]) -> dict:
    output = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[dict]:
    out = tempfile.mkdtemp(prefix="bench-memory-")
    rows = []
    for key in chosen_runs(default=["cnn-Q1_1"] if quick else ["cnn", "faces", "imbalance", "latent"]):
        study, overrides = run_overrides(key, quick, out)
        result = peak_rss([sys.executable, "-m", "vislab", "run", study, *[f"--{item}" for item in overrides]])
        if result["code"] != 0:
            raise RuntimeError(f"vislab run {study} failed ({result['code']}): {result['error']}")
        rows.append(row(f"peak memory: {key} default run", "GiB", figure=result["peak"] / GIB, target=4.0,
                        higher_is_better=False, repeats=1,
                        note=f"one run of {result['seconds']:.0f} s{'; tiny run on built-in data' if quick else ''}"))
    return rows
