"""The example site.yaml as text, minus some top-level sections, for tests that bring their own."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def example_site_without(keys: set[str], site: Path = ROOT / "config" / "site.yaml") -> str:
    out, skipping = [], False
    for line in site.read_text(encoding="utf-8").splitlines(keepends=True):
        if line[:1].strip() and not line.startswith("#"):
            skipping = line.split(":", 1)[0] in keys
        if not skipping:
            out.append(line)
    return "".join(out)
