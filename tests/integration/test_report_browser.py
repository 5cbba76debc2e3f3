"""The HTML report in a real browser (Debian's chromium, installed by `make system-deps`): every chart's
labels are inside its box and no two labels overlap, from the DOM's own bounding boxes. A screenshot is
kept as a CI artefact under build/artifacts/ (or $EDGE_AGENT_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (make system-deps installs it as root: apt-get install chromium)",
)

# Runs in the page after layout: every <text> of every <svg> against the svg's box and against the
# other texts of the same svg. The result goes into the DOM, which --dump-dom prints.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const problems = [];
  let texts = 0;
  document.querySelectorAll('svg').forEach((svg, i) => {
    const box = svg.getBoundingClientRect();
    const rects = [];
    svg.querySelectorAll('text').forEach((t) => {
      texts += 1;
      const r = t.getBoundingClientRect();
      const out = r.left < box.left - 1 || r.right > box.right + 1;
      if (out || r.top < box.top - 1 || r.bottom > box.bottom + 1) {
        problems.push({svg: i, kind: 'outside', text: t.textContent});
      }
      rects.push([t.textContent, r]);
    });
    for (let a = 0; a < rects.length; a++) {
      for (let b = a + 1; b < rects.length; b++) {
        const p = rects[a][1], q = rects[b][1];
        const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
        const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
        if (w > 1 && h > 1) problems.push({svg: i, kind: 'overlap', text: rects[a][0], other: rects[b][0]});
      }
    }
  });
  const pre = document.createElement('pre');
  pre.id = 'geometry';
  pre.textContent = JSON.stringify({svgs: document.querySelectorAll('svg').length, texts, problems});
  document.body.appendChild(pre);
});
</script>
"""


# A deliberately bad chart: a label past the right edge and two labels on top of each other.
_CONTROL = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="40">'
    '<text x="170" y="15" font-size="12">cut off</text>'
    '<text x="10" y="30" font-size="12">one</text><text x="14" y="32" font-size="12">two</text></svg>'
)


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("period", ["2026Q3", "2026-07"])
def test_every_chart_label_is_inside_its_box_and_none_overlap(tmp_path: Path, period: str) -> None:
    argv = ["report", "-c", str(ROOT / "config" / "site.yaml"), "--demo", "--period", period]
    assert main([*argv, "--format", "html", "--out", str(tmp_path)]) == 0
    (html,) = tmp_path.glob("*.html")
    probe = tmp_path / "probe.html"
    page = html.read_text(encoding="utf-8").replace("</body>", _CONTROL + _PROBE + "</body>")
    probe.write_text(page, encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="geometry">(.*?)</pre>', dom, re.S)
    assert m is not None, dom[-2000:]
    got = json.loads(
        m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    artefacts = Path(os.environ.get("EDGE_AGENT_ARTIFACTS", ROOT / "build" / "artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / f"report-{period}.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,6000", html.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
    assert got["svgs"] >= 5 and got["texts"] > 20  # the charts are there
    # the probe's own control chart (appended last) is caught: the probe can see a bad chart
    control = [p for p in got["problems"] if p["svg"] == got["svgs"] - 1]
    assert {(p["kind"], p["text"]) for p in control} == {("outside", "cut off"), ("overlap", "one")}
    assert [p for p in got["problems"] if p not in control] == []
