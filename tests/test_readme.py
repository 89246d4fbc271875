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


def test_gallery_images_exist_and_each_names_the_command_that_made_it():
    readme = (REPO / "README.md").read_text()
    shown = re.findall(r'<img src="(docs/gallery/[^"]+)"', readme)
    assert shown, "the README shows no gallery figure"
    for path in shown:
        assert (REPO / path).is_file(), f"README shows {path}, which is not in the repository"
    on_disk = {f"docs/gallery/{p.name}" for p in (REPO / "docs" / "gallery").glob("*.png")}
    assert on_disk == set(shown), f"gallery files not shown in the README: {sorted(on_disk - set(shown))}"
    # every figure block is followed by a caption that names the vislab command regenerating it
    for block in re.findall(r"</p>\n\n\*(.*?)\*\n", readme, flags=re.S):
        assert "`vislab run " in block, block
    assert len(re.findall(r"</p>\n\n\*", readme)) == len(re.findall(r"<p>\n<img", readme))
