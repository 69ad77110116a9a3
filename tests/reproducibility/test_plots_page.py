"""`dvc plots show` on the committed plot files gives a page that renders in headless Chromium with
the network off: every chart drawn, titled, the confusion matrices with their counts, no errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Put first in <head>: records script errors, console.error and the resources the page loads.
ERROR_PROBE = """<script>
window.probeErrors = [];
window.addEventListener('error', event => window.probeErrors.push(String(event.message)));
const consoleError = console.error;
console.error = (...args) => { window.probeErrors.push(args.join(' ')); consoleError.apply(console, args); };
</script>"""
# Put last in <head>, after the libraries: draws with SVG (so the text is in the DOM) and, once every
# chart has settled, writes what each chart's SVG says into <pre id="probe">.
RESULT_PROBE = """<script>
const embeds = [];
const vegaEmbedOriginal = window.vegaEmbed;
window.vegaEmbed = (el, spec, opt) => {
  const embedded = vegaEmbedOriginal(el, spec, {...opt, renderer: 'svg'});
  embeds.push(embedded.then(() => el));
  return embedded;
};
window.addEventListener('load', () => Promise.allSettled(embeds).then(results => {
  const charts = {};
  for (const result of results.filter(r => r.status === 'fulfilled')) {
    const div = document.querySelector(result.value);
    charts[div.id] = [...div.querySelectorAll('svg text')].map(text => text.textContent);
  }
  const report = {
    charts,
    rejected: results.filter(r => r.status === 'rejected').map(r => String(r.reason)),
    errors: window.probeErrors,
    resources: performance.getEntriesByType('resource').map(entry => entry.name),
  };
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
}));
</script>"""


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("dvc_plots")
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], cwd=REPO_ROOT, check=True,
                   capture_output=True, text=True, timeout=120)
    return (out / "index.html").read_text(encoding="utf-8")


def expected_titles() -> list[str]:
    """The titles dvc.yaml gives: each stage plot's `title`, each top-level plot's id."""
    document = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    titles = [props["title"] for stage in document["stages"].values() for entry in stage.get("plots", [])
              for props in entry.values()]
    return titles + [next(iter(entry)) for entry in document.get("plots", [])]


def render(page_html: str, folder: Path) -> dict:
    """What RESULT_PROBE reports after Chromium ran the page offline."""
    head_start = page_html.index("<head>") + len("<head>")
    head_end = page_html.rindex("</head>")  # the libraries' code holds the word too; the page's own is last
    probed = page_html[:head_start] + ERROR_PROBE + page_html[head_start:head_end] + RESULT_PROBE \
        + page_html[head_end:]
    path = folder / "probed.html"
    path.write_text(probed, encoding="utf-8")
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={folder / 'profile'}",
               # no network: every host name fails to resolve and every request goes to a closed port
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=30000", "--dump-dom", path.as_uri()]
    dom = subprocess.run(command, check=True, capture_output=True, text=True, timeout=180).stdout
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert match, "the page never finished embedding its charts"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def test_the_page_carries_its_libraries(page: str) -> None:
    assert "cdn.jsdelivr.net" not in page and not re.search(r"<script[^>]+src=", page)
    for library in ("vega 5.", "vega-lite 5.", "vega-embed 6."):
        assert f"/* {library}" in page
    assert (REPO_ROOT / ".dvc" / "plots" / "THIRD_PARTY_LICENSES.txt").is_file()


@pytest.mark.skipif(browser() is None, reason="chromium is not installed (Debian: apt-get install chromium; "
                                              ".ci/run installs it)")
def test_every_chart_renders_offline_with_titles_and_counts(page: str, tmp_path: Path) -> None:
    report = render(page, tmp_path)
    assert report["errors"] == [] and report["rejected"] == []
    assert [name for name in report["resources"] if not name.startswith("file:")] == []
    titles = expected_titles()
    assert len(report["charts"]) == len(titles) == 8
    texts = [" ".join(chart) for chart in report["charts"].values()]
    for title in titles:
        assert sum(title in text for text in texts) == 1, title
    for split in ("validation", "test"):
        rows = json.loads((REPO_ROOT / "plots" / split / "confusion.json").read_text(encoding="utf-8"))
        counts = Counter((row["actual"], row["predicted"]) for row in rows)
        cells = Counter(str(count) for count in counts.values())  # the count written in each cell
        shown = Counter(report["charts"][f"plots_{split}_confusion_json"])
        assert all(shown[text] >= number for text, number in cells.items()), (split, cells, shown)
    for chart_id, chart in report["charts"].items():
        if "curve" in chart_id:
            assert any("baseline/" in text for text in chart), chart_id  # the baseline's curve in the legend
