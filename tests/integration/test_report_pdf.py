"""`edge-agent report --format pdf`: the report printed by headless Chromium, with Chinese fonts; its text
layer (read with pypdf) holds the Chinese headings and the totals of the JSON document of the same run."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from pypdf import PdfReader

from edge_agent.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "config" / "site.yaml")
ARTIFACTS = ROOT / "build" / "artifacts"

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium not installed (make system-deps installs it as root: "
    "apt-get install chromium fonts-noto-cjk)",
)


def test_pdf_has_the_chinese_headings_and_the_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "report",
        "-c",
        SITE,
        "--period",
        "2026-07",
        "--demo",
        "--out",
        str(tmp_path),
        "--format",
        "json,pdf",
    ]
    assert main(argv) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    pdf = next(p for p in paths if p.suffix == ".pdf")
    doc = json.loads(next(p for p in paths if p.suffix == ".json").read_text(encoding="utf-8"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / "report-2026-07.pdf")
    reader = PdfReader(pdf)
    assert len(reader.pages) >= 2
    # Noto CJK maps some ideographs to Kangxi radical code points in the text layer: NFKC folds them back
    text = unicodedata.normalize("NFKC", "\n".join(page.extract_text() for page in reader.pages))
    for heading in (
        "能耗分析报告 Energy report 2026-07",
        "1 分类能耗 Totals by category",
        "2 分项能耗 End use",
        "4 年度指标 KPIs",
        "综合能耗(折标煤)Total energy consumption (kgce)",
    ):
        assert heading in text, heading
    assert f"{doc['totals']['kgce']:,.1f}" in text
    for cat in doc["totals"]["by_category"]:
        assert f"{cat['total']:,.1f}" in text, cat["code"]


def test_pdf_without_a_browser_is_a_clear_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    argv = ["report", "-c", SITE, "--period", "2026-07", "--demo", "--out", str(tmp_path), "--format", "pdf"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "PDF and PNG need a headless Chromium: apt-get install chromium fonts-noto-cjk" in err
