"""The libyaml composer path gives the same data, marks and duplicates as the pure-Python one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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


PLAIN = [
    *SAMPLES[:3],
    "a:\nb: ~\nc: ''\nd: |\n  two\n  lines\ne: >-\n  folded\n  text\n",
    "f: [1, -2.5, 0x10, 1e3, .inf, yes, True, 2025-10-01 08:00:00+08:00]\n",
    "k: {0: off, 1: cool, 2.5: x, null: y, 2025-10-01: day, 18:30: t}\nq: \"01000\"\nr: '01E00'\n",
    "- - - a\n    - b\n  - c\n- {x: [1, {y: z}]}\n",
    "# only a comment\n",
    "",
    "---\nplain\n...\n",
]
NOT_PLAIN = [
    "a: &x 1\nb: *x\n",  # anchors and aliases
    "d: &d {a: 1}\ne: {<<: *d, b: 2}\n",  # merge key
    "a: 1\na: 2\n",  # duplicate key
    "a: !!str 5\n",  # explicit tag
    "? [1, 2]\n: v\n",  # complex key
    "[" * 70 + "]" * 70 + "\n",  # deeper than MAX_DEPTH
    "a: 1\n---\nb: 2\n",  # two documents
    "a: [1, 2\n",  # a syntax error
]


@pytest.mark.parametrize("text", PLAIN)
def test_a_plain_document_is_built_from_events_as_the_node_path_builds_it(text: str) -> None:
    plain, data = yamlmarks._build_plain(text)
    assert plain
    marked = yamlmarks.parse_yaml(text, file="f.yaml", marks=True)
    assert data == marked.data and type(data) is type(marked.data)
    lazy = yamlmarks.parse_yaml(text, file="f.yaml")
    assert (lazy.key_marks, lazy.value_marks, lazy.duplicates) == (
        marked.key_marks,
        marked.value_marks,
        marked.duplicates,
    )  # recorded on first use, the same


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_takes_the_node_path(text: str) -> None:
    assert yamlmarks._build_plain(text) == (False, None)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.sampled_from(["01000", "0x1F", "1e3", "18:30", "yes", "off", "~", "2025-10-01", "-", "a: b", "#"]),
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=documents, flow=st.sampled_from([None, True, False]))
def test_events_and_nodes_agree_on_generated_documents(data: object, flow: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    plain, built = yamlmarks._build_plain(text)
    assert plain
    assert built == yamlmarks.parse_yaml(text, file="f.yaml", marks=True).data
