"""The report as PDF (what gets filed as evidence): the same HTML, printed by headless Chromium.

Chromium is not a Python dependency: Debian's ``chromium`` package and ``fonts-noto-cjk`` for the Chinese
text (``make system-deps``). Without it, ``PdfUnavailable`` says what to install; nothing else changes.
The HTML is written to a temporary file and printed with ``--print-to-pdf`` (no header or footer lines:
the report carries its own title and period); a private, temporary browser profile is used each time.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PdfUnavailable", "find_chromium", "html_to_pdf", "html_to_png"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


class PdfUnavailable(RuntimeError):
    """No browser to print with, or it failed; the message says what to do."""


def find_chromium() -> str | None:
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def html_to_pdf(html: str, out: Path, *, timeout_s: float = 120.0) -> Path:
    return _print(html, out, ["--no-pdf-header-footer", f"--print-to-pdf={out.resolve()}"], timeout_s)


def html_to_png(html: str, out: Path, *, size: tuple[int, int], timeout_s: float = 120.0) -> Path:
    """A screenshot of the page at ``size`` (width, height) pixels."""
    args = ["--hide-scrollbars", f"--window-size={size[0]},{size[1]}", f"--screenshot={out.resolve()}"]
    return _print(html, out, args, timeout_s)


def _print(html: str, out: Path, args: list[str], timeout_s: float) -> Path:
    browser = find_chromium()
    if browser is None:
        raise PdfUnavailable(
            "PDF and PNG need a headless Chromium: apt-get install chromium fonts-noto-cjk "
            "(or write --format html)"
        )
    with tempfile.TemporaryDirectory(prefix="edge-agent-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            *args,
            page.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PdfUnavailable(f"{browser} did not finish printing within {timeout_s:.0f} s") from None
        if done.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise PdfUnavailable(
                f"{browser} failed to print the PDF (exit {done.returncode}): {' / '.join(tail)}"
            )
    return out
