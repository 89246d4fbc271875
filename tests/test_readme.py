"""The README's two set-up commands are exactly what CI runs."""

from __future__ import annotations

import re

from conftest import REPO


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert install in ci, "README command 1 (install + demo) is not what .ci/run runs"
    assert tests in ci, "README command 2 (tests) is not what .ci/run runs"
    assert "-c constraints.txt" in install and "vislab demo" in install
