"""The libyaml composer path gives the same data, marks and duplicates as the pure-Python one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import yamlmarks
from edge_agent.devtools.bigsite import bench_site_yaml

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    (ROOT / "config" / "site.yaml").read_text(encoding="utf-8"),
    (ROOT / "config" / "policy.yaml").read_text(encoding="utf-8"),
    bench_site_yaml(devices=3, points=4, endpoints=[("127.0.0.1", 1502)], interval_s=5),
    "defaults: &d {a: 1, b: 二}\nx:\n  <<: *d\n  b: 3\n  b: 4\nmodes: {0: off, 1: on}\ncode: 01000\n",
    "a: [1, 2\n",  # a syntax error: the pure-Python path must produce the message
    "[" * 70 + "]" * 70 + "\n",  # deeper than MAX_DEPTH
    "a: 1\n---\nb: 2\n",  # two documents
]


def _parse(text: str) -> object:
    try:
        doc = yamlmarks.parse_yaml(text, file="f.yaml")
    except yamlmarks.YamlSyntaxError as exc:
        return ("error", str(exc))
    return (doc.data, doc.key_marks, doc.value_marks, doc.duplicates)


@pytest.mark.parametrize("text", SAMPLES)
def test_fast_and_pure_paths_agree(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert yamlmarks._CLoader is not None  # libyaml is part of the PyYAML wheels we install
    fast = _parse(text)
    monkeypatch.setattr(yamlmarks, "_CLoader", None)
    pure = _parse(text)
    assert fast == pure
