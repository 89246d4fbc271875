"""Each study's demo report rendered in headless Chromium: every image loads, the page logs
no error, and the summary numbers it shows are those of summary.json. Screenshots go to
test-artifacts/browser/ (git-ignored) for a person to look at.

Chromium is driven with `--dump-dom` only (no websocket library is needed): the test renders
a copy of report.html, in another folder and with a small script added at the top of <head>,
that records load errors and console errors and, once the page has loaded, writes each
image's status into the DOM. The report itself has no script at all.
"""

from __future__ import annotations

import html as html_module
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vislab.cli import run_study
from vislab.studies import available_studies, get_study

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (found := shutil.which(name))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # no name resolves: a page needing the network fails here

CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener("error", function (event) {  // capture: resource load errors do not bubble
  var target = event.target || {};
  window.__errors.push(event.message || ("failed to load " + (target.currentSrc || target.src || target.href || target.tagName)));
}, true);
["error", "warn"].forEach(function (level) {
  var original = console[level];
  console[level] = function () { window.__errors.push(level + ": " + Array.from(arguments).join(" ")); original.apply(console, arguments); };
});
window.addEventListener("load", function () {
  var report = {
    images: Array.from(document.images).map(function (image) {
      return {alt: image.alt, complete: image.complete, naturalWidth: image.naturalWidth,
              inline: image.getAttribute("src").indexOf("data:") === 0};
    }),
    summary: Object.fromEntries(Array.from(document.querySelectorAll("[data-key]")).map(function (cell) {
      return [cell.dataset.key, cell.textContent.trim()];
    })),
    external: Array.from(document.querySelectorAll("script[src], link[href], iframe, object, embed")).length,
    height: document.documentElement.scrollHeight,
    errors: window.__errors,
  };
  var out = document.createElement("pre");
  out.id = "vislab-browser-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""

if CHROMIUM is None:
    pytest.skip("no chromium binary found (install Debian's `chromium` package; .ci/run does when it can)",
                allow_module_level=True)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory):
    """study -> its demo run folder (made on first use, with the demo's own settings)."""
    out = tmp_path_factory.mktemp("browser-runs")
    made: dict[str, Path] = {}

    def get(study: str) -> Path:
        if study not in made:
            overrides = [f"{key}={value}" for key, value in get_study(study).DEMO.items()] + [f"out={out}"]
            made[study] = run_study(study, overrides=overrides, name="demo")[1]
        return made[study]

    return get


def shown_numbers(summary: dict, prefix: str = "") -> dict[str, float]:
    """Every number summary.json holds that the page shows: nested dicts by dotted key, and the
    scalar fields of lists of records (a sweep's variants) as key.index.field."""
    found: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= shown_numbers(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = float(value)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for index, record in enumerate(value):
                found |= {f"{name}.{index}.{field}": float(number) for field, number in record.items()
                          if isinstance(number, (int, float)) and not isinstance(number, bool)}
    return found


@pytest.mark.parametrize("study", available_studies())
def test_report_renders_in_chromium(study: str, demo_runs, tmp_path: Path) -> None:
    run_dir = demo_runs(study)
    report = run_dir / "report.html"
    html = report.read_text()
    assert "<script" not in html  # the report itself needs no JavaScript

    # The test copy lives in another folder: a report that needed files beside it would break here.
    copy = tmp_path / "copy" / "report.html"
    copy.parent.mkdir()
    copy.write_text(html.replace("<head>", "<head>\n" + CHECK_SCRIPT, 1))
    result = chromium(tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                      "--dump-dom", copy.as_uri())
    found = re.search(r'<pre id="vislab-browser-check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"chromium did not render the page (exit {result.returncode}): {result.stderr[-2000:]}"
    check = json.loads(html_module.unescape(found.group(1)))

    plots = sorted((run_dir / "plots").glob("*.png"))
    assert len(check["images"]) == len(plots) >= 3, (len(check["images"]), [p.name for p in plots])
    broken = [image["alt"] for image in check["images"]
              if not (image["complete"] and image["naturalWidth"] > 0 and image["inline"])]
    assert broken == [], f"images that did not load: {broken}"
    assert check["external"] == 0
    assert check["errors"] == []
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    for data_plot in ("data_samples", "data_counts"):  # every report opens with its data
        assert f'id="plot-{data_plot}"' in html
    assert html.index('id="data"') < html.index('id="summary"')

    expected = shown_numbers(json.loads((run_dir / "summary.json").read_text()))
    assert expected, "summary.json holds no numbers"
    missing = sorted(set(expected) - set(check["summary"]))
    assert missing == [], f"summary numbers not shown: {missing}"
    wrong = {key: (check["summary"][key], value) for key, value in expected.items()
             if not math.isclose(float(check["summary"][key]), value, rel_tol=1e-3, abs_tol=1e-4)}
    assert wrong == {}, f"shown != summary.json: {wrong}"

    # A screenshot of the whole page (the real report, not the copy) for a person to look at.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{study}.png"
    height = min(int(check["height"]) + 20, 16000)
    shot = chromium(tmp_path / "profile-shot", f"--window-size=1200,{height}", f"--screenshot={screenshot}",
                    report.as_uri())
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    shutil.copy(screenshot, tmp_path / screenshot.name)
