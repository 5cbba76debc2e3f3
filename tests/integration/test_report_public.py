"""`edge-agent report --public`: the one-page public summary (定期公示) renders in headless Chromium at the
lobby-screen size without overflow (a 1280 x 720 window, whose --dump-dom viewport is 1280 x 633: stricter
than the PNG's): the page does not scroll, no card clips its content, no line runs out
of its card. Figures shown are the report's own (JSON document of the same run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.cli.app import main
from edge_agent.report.public import PUBLIC_SIZE

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "config" / "site.yaml")
HISTORY = ROOT / "tests" / "fixtures" / "ledger" / "bills-2023-2025.csv"  # 2023-2025 monthly bills
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (make system-deps installs it as root: "
    "apt-get install chromium fonts-noto-cjk)",
)

_PROBE = """<script>
window.addEventListener('load', () => {
  const d = document.documentElement, problems = [];
  if (d.scrollWidth > innerWidth || d.scrollHeight > innerHeight)
    problems.push({kind: 'page', w: d.scrollWidth, h: d.scrollHeight});
  for (const c of document.querySelectorAll('.card')) {
    if (c.scrollHeight > c.clientHeight + 1 || c.scrollWidth > c.clientWidth + 1)
      problems.push({kind: 'card', text: c.querySelector('h2').textContent});
    const box = c.getBoundingClientRect();
    for (const el of c.querySelectorAll('p, h2')) {
      const r = el.getBoundingClientRect();
      if (r.right > box.right + 1 || r.bottom > box.bottom + 1)
        problems.push({kind: 'line', text: el.textContent});
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'geometry';
  pre.textContent = JSON.stringify({cards: document.querySelectorAll('.card').length, problems});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("period", ["2026-07", "2026Q3"])
def test_public_page_fits_the_screen_and_shows_the_reports_figures(
    tmp_path: Path, period: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "-c", SITE, "--demo", "--period", period, "--format", "json", "--public"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    page = next(p for p in paths if p.name.startswith("public-") and p.suffix == ".html")
    png = next(p for p in paths if p.suffix == ".png")
    doc = json.loads(next(p for p in paths if p.suffix == ".json").read_text(encoding="utf-8"))
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artefacts = Path(os.environ.get("EDGE_AGENT_ARTIFACTS", ROOT / "build" / "artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, artefacts / f"public-{period}.png")

    html = page.read_text(encoding="utf-8")
    assert "能源消耗公示" in html and "千克标准煤/平方米" in html
    assert f'data-key="public.period_kgce_per_m2">{doc["kpi"]["period_kgce_per_m2"]:,.3f}' in html
    m2 = next(r for r in doc["kpi"]["rows"] if r["key"] == "kgce_per_m2")
    assert f'data-key="public.ytd_kgce_per_m2">{m2["to_date"]:,.3f}' in html

    assert _geometry(html, tmp_path) == {"cards": 4, "problems": []}


def _geometry(html: str, tmp_path: Path) -> dict[str, object]:
    """What the probe measures of the page in headless Chromium at the lobby-screen size."""
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    w, h = PUBLIC_SIZE
    dom = _chromium("--virtual-time-budget=5000", f"--window-size={w},{h}", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="geometry">(.*?)</pre>', dom, re.S)
    assert m is not None, dom[-2000:]
    got: dict[str, object] = json.loads(
        m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return got


@pytest.mark.parametrize(
    ("period", "fill", "source", "electricity", "water"),
    [
        # last year's bills cover March 2024: the report's own comparison (ledger: meters and bills)
        ("2025-03", False, "ledger", "用电量比去年同期", "用水量比去年同期"),
        # May 2024 has no bill: the history compares, --fill estimates May 2024 (46000 x 0.96 = 44160 kWh)
        (
            "2025-05",
            True,
            "history",
            "用电量 42,835，去年同期 44,160~ 千瓦时：",
            "用水量 596，去年同期 614~ 立方米：",
        ),
        # without --fill last year's May stays missing: the history row has no figure, nothing to compare
        ("2025-05", False, "ledger", "用电量：去年同期无数据", "用水量：去年同期无数据"),
    ],
)
def test_public_page_compares_with_imported_history_when_the_ledger_has_no_last_year(
    tmp_path: Path,
    period: str,
    fill: bool,
    source: str,
    electricity: str,
    water: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 17: where the ledger (meters, bills of the period) has nothing for last year's period, the page
    compares with the report's history analysis (imported bills, filled months marked ~), and still fits
    the screen."""
    db = tmp_path / "state.db"
    assert main(["ledger", "import", "-c", SITE, "--db", str(db), str(HISTORY)]) == 0
    argv = ["report", "-c", SITE, "--db", str(db), "--period", period, "--format", "json", "--public"]
    assert main([*argv, *(["--fill"] if fill else []), "--out", str(tmp_path / "out")]) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    page = next(p for p in paths if p.name.startswith("public-") and p.suffix == ".html")
    doc = json.loads(next(p for p in paths if p.suffix == ".json").read_text(encoding="utf-8"))
    ledger_has = {y["code"]: y["last_year"] is not None for y in doc["last_year"]["by_category"]}
    assert ledger_has["01000"] == ledger_has["02000"] == (period == "2025-03")
    html = page.read_text(encoding="utf-8")
    found = {k: tuple(v) for k, *v in re.findall(
        r'data-key="public\.change\.(\w+)" data-source="(\w+)"[^>]*>(.*?)</p>', html
    )}  # fmt: skip
    assert found["electricity"][0] == found["water"][0] == source, found
    assert found["electricity"][1].startswith(electricity) and found["water"][1].startswith(water)
    if source == "history":
        assert (
            "下降 3.0%" in found["electricity"][1] and "下降 3.0%" in found["water"][1]
        )  # 42835 / 44160 - 1
        assert 'data-estimated="1"' in html and "带 ~ 的为缺月估算值" in html
        assert "去年同期为导入的历史账单等数据" in html
    else:
        assert "历史账单" not in html and "~" not in html
    assert _geometry(html, tmp_path) == {"cards": 4, "problems": []}


def test_the_probe_sees_an_overflowing_page(tmp_path: Path) -> None:
    """Control: the same probe on a page that is too tall reports it (so a pass means something)."""
    page = tmp_path / "tall.html"
    page.write_text(
        '<!DOCTYPE html><html><body><section class="card" style="height:50px;overflow:hidden"><h2>x</h2>'
        + "<p>line</p>" * 40
        + "</section>"
        + '<div style="height:2000px"></div>'
        + _PROBE
        + "</body></html>",
        encoding="utf-8",
    )
    w, h = PUBLIC_SIZE
    dom = _chromium("--virtual-time-budget=5000", f"--window-size={w},{h}", "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="geometry">(.*?)</pre>', dom, re.S)
    assert m is not None
    kinds = {p["kind"] for p in json.loads(m.group(1).replace("&quot;", '"'))["problems"]}
    assert kinds == {"page", "card", "line"}
