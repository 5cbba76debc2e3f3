"""YAML loading that remembers where every key and value came from.

PyYAML builds plain Python data and forgets positions; error messages need ``FILE:LINE:COL``. We
compose the node tree once, build the data with PyYAML's safe constructor (tags, merges and
anchors behave as usual) and walk the same tree to record the mark of each key and value by its
path (``("devices", 3, "points", 7, "address")``). The walk also finds duplicate keys in one
mapping, which PyYAML silently resolves by keeping the last one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "DuplicateKey",
    "Mark",
    "YamlDoc",
    "YamlPath",
    "YamlSyntaxError",
    "format_path",
    "load_yaml",
    "parse_path",
    "parse_yaml",
]

YamlPath = tuple[str | int, ...]

# Limits on what a config file may ask of the loader, far above any real site (a 5,000-point site.yaml
# is about 1 MB and 70,000 nodes) and far below what exhausts a gateway: a file of 50 MB of comments, an
# alias bomb (&a [*b, *b, ...] six levels deep) or 100,000 nested brackets are refused with a position.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_NODES = 250_000  # nodes after aliases are expanded (what the checks and the models will visit)

# What YAML 1.1 (PyYAML's reader) accepts in a file: no C0 controls but tab/LF/CR, no DEL, no C1
# controls but NEL, no surrogates, no U+FFFE/U+FFFF.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CONTROL_NAMES = {
    0: "NUL",
    0x0C: "form feed",
    0x1B: "ESC",
    0x7F: "DEL",
    0xFFFE: "noncharacter",
    0xFFFF: "noncharacter",
}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    col: int


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    path: YamlPath  # path of the repeated key
    first: Mark
    again: Mark


class YamlSyntaxError(Exception):
    """The text is not YAML (or not one document); carries the 1-based position of the problem."""

    def __init__(self, message: str, *, file: str, mark: Mark) -> None:
        super().__init__(f"{file}:{mark.line}:{mark.col}: {message}")
        self.message = message
        self.file = file
        self.mark = mark


@dataclass(slots=True)
class YamlDoc:
    """Plain data (dicts, lists, scalars) plus the positions of its parts."""

    file: str
    data: Any
    key_marks: dict[YamlPath, Mark] = field(default_factory=dict)
    value_marks: dict[YamlPath, Mark] = field(default_factory=dict)
    duplicates: list[DuplicateKey] = field(default_factory=list)

    def mark(self, path: Sequence[str | int]) -> Mark:
        """Where ``path`` is written: its key for a mapping entry, its node for a list item.

        A path that is not in the file (a missing key, a merged default) gets the nearest
        enclosing node that is.
        """
        p = tuple(path)
        while p:
            if p in self.key_marks:
                return self.key_marks[p]
            if p in self.value_marks:
                return self.value_marks[p]
            p = p[:-1]
        return self.value_marks.get((), Mark(1, 1))

    def container_mark(self, path: Sequence[str | int]) -> Mark:
        """Where the mapping or list at ``path`` starts (for "missing key" errors)."""
        p = tuple(path)
        while p:
            if p in self.value_marks:
                return self.value_marks[p]
            p = p[:-1]
        return self.value_marks.get((), Mark(1, 1))


def format_path(path: Sequence[str | int]) -> str:
    """``("devices", 3, "points", 7, "address")`` -> ``devices[3].points[7].address``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 plain scalars (what editors using yaml-language-server assume).

    YAML 1.1 turns ``off``/``no``/``on`` into booleans (ac_mode states ``{0: off}`` would break),
    ``01000`` into the octal number 512 (an energy code) and ``18:30`` into 1110 (base 60). Here only
    ``true``/``false`` are booleans, integers are decimal (or 0x/0o), a number with a leading zero
    stays text, there is no base-60, and a float needs a dot (``01E00``, an energy code, is not the
    number 1.0; a float field still accepts the text ``1e3``). Dates (``2025-10-01``) load as dates.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:  # type: ignore[override]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep; a config file never needs that",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)  # type: ignore[arg-type,no-any-return]
        finally:
            self.depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return int(text, 0)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not an integer", node.start_mark
        ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_CBase: type[Any] | None = getattr(yaml, "CSafeLoader", None)


def _c_loader_class() -> type[Any] | None:
    """A libyaml-backed loader with _Loader's resolvers and constructors, or None without libyaml.

    libyaml composes (scans, parses, builds nodes with marks) many times faster than the pure-Python
    composer: on a 10,000-point site.yaml it is most of `check`'s time."""
    if _CBase is None:
        return None
    cls: type[Any] = type(
        "_CLoader",
        (_CBase,),
        {
            "yaml_implicit_resolvers": _Loader.yaml_implicit_resolvers,
            "yaml_constructors": _Loader.yaml_constructors,
        },
    )
    return cls


_CLoader = _c_loader_class()


_PATH_PART = re.compile(r"""\[(\d+)\]|\[(['"])(.*?)\2\]|\.?([^.\[]+)""")


def parse_path(text: str) -> YamlPath:
    """The inverse of format_path: ``devices[3].address`` -> ``("devices", 3, "address")``."""
    parts: list[str | int] = []
    for m in _PATH_PART.finditer(text.strip()):
        index, _, quoted, plain = m.groups()
        if index is not None:
            parts.append(int(index))
        elif quoted is not None:
            parts.append(quoted)
        elif plain:
            parts.append(plain)
    return tuple(parts)


def _mark(m: yaml.Mark) -> Mark:
    return Mark(m.line + 1, m.column + 1)


def _key_value(loader: Any, node: Node) -> object:
    if isinstance(node, ScalarNode):
        if node.tag == _STR_TAG:  # most keys: the constructor would return the same text, slower
            return node.value

        return loader.construct_object(node, deep=True)
    return None  # complex keys cannot be named in a path


class _Walker:
    def __init__(self, loader: Any, doc: YamlDoc) -> None:
        self.loader = loader
        self.doc = doc
        self.active: set[int] = set()  # guards against recursive aliases (&a [*a])
        self.seen_dups: set[tuple[int, int]] = set()
        self.nodes = 0  # visited, aliases expanded

    def walk(self, node: Node, path: YamlPath, *, merged: bool = False) -> None:
        if id(node) in self.active:
            return
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlSyntaxError(
                f"more than {MAX_NODES} values once aliases (*name) are expanded; "
                "aliases that repeat aliases multiply (an alias bomb?)",
                file=self.doc.file,
                mark=_mark(node.start_mark),
            )
        self.active.add(id(node))
        try:
            if merged:
                self.doc.value_marks.setdefault(path, _mark(node.start_mark))
            else:
                self.doc.value_marks[path] = _mark(node.start_mark)
            if isinstance(node, MappingNode):
                self._mapping(node, path, merged=merged)
            elif isinstance(node, SequenceNode):
                for i, item in enumerate(node.value):
                    self.walk(item, (*path, i), merged=merged)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: YamlPath, *, merged: bool) -> None:
        first: dict[object, Mark] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = _key_value(self.loader, key_node)
            if not isinstance(key, str | int) or isinstance(key, bool):
                key = str(key)
            here = _mark(key_node.start_mark)
            if key in first:
                if not merged and (here.line, here.col) not in self.seen_dups:
                    self.seen_dups.add((here.line, here.col))
                    self.doc.duplicates.append(DuplicateKey(path=(*path, key), first=first[key], again=here))
            else:
                first[key] = here
            sub = (*path, key)
            if merged:
                self.doc.key_marks.setdefault(sub, here)
            else:
                self.doc.key_marks[sub] = here
            self.walk(value_node, sub, merged=merged)
        # Merged keys (<<: *defaults) never override explicit ones, so record them only if absent.
        for m in merges:
            sources = m.value if isinstance(m, SequenceNode) else [m]
            for src in sources:
                if isinstance(src, MappingNode):
                    self._mapping(src, path, merged=True)


def _too_deep(loader: Any) -> bool:
    """True when the event stream nests deeper than MAX_DEPTH (libyaml's composer recurses in C)."""
    depth = 0
    start = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    end = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    while loader.check_event():
        event = loader.get_event()
        if isinstance(event, start):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif isinstance(event, end):
            depth -= 1
    return False


def _compose_fast(text: str) -> tuple[Any, Node | None] | None:
    """Compose with libyaml: (loader, node) or None when the pure-Python path must run instead.

    Anything unusual (a syntax error, more than one document, nesting beyond MAX_DEPTH) returns None:
    the pure-Python loader then produces the exact message and position users already know."""
    if _CLoader is None:
        return None
    probe = _CLoader(text)
    try:
        if _too_deep(probe):
            return None
    except yaml.YAMLError:
        return None
    finally:
        probe.dispose()
    loader = _CLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        loader.dispose()
        return None
    return loader, node


def _check_characters(text: str, file: str) -> None:
    """Characters YAML does not allow (NUL, ESC, form feed, DEL, U+FFFE ...), at their position."""
    m = _NON_PRINTABLE.search(text)
    if m is None:
        return
    before = text[: m.start()]
    line = before.count("\n") + 1
    col = m.start() - (before.rfind("\n") + 1) + 1
    cp = ord(m.group())
    name = _CONTROL_NAMES.get(cp, "control character" if cp < 0xA0 else "character")
    raise YamlSyntaxError(
        f"U+{cp:04X} ({name}) is not allowed in a YAML file; remove it (a stray byte from a copy-paste "
        "or another editor?)",
        file=file,
        mark=Mark(line, col),
    )


def parse_yaml(text: str, *, file: str) -> YamlDoc:
    """Parse one YAML document; raises YamlSyntaxError with the position of the problem.

    Refuses, with a position, what would otherwise exhaust the process: characters YAML does not allow,
    nesting deeper than MAX_DEPTH and more than MAX_NODES values once aliases are expanded."""
    _check_characters(text, file)
    fast = _compose_fast(text)
    loader: Any
    if fast is not None:
        loader, composed = fast
    else:
        try:
            loader = _Loader(text)
        except yaml.YAMLError as exc:  # the reader's own checks (the scan above should have caught them)
            raise YamlSyntaxError(str(exc), file=file, mark=Mark(1, 1)) from exc
    try:
        try:
            node = composed if fast is not None else loader.get_single_node()
            doc = YamlDoc(file=file, data=None)
            if node is not None:
                # Walk before constructing: construction flattens merge keys into the nodes in place.
                _Walker(loader, doc).walk(node, ())
                doc.data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            if exc.context and "quoted scalar" in exc.context and exc.context_mark is not None:
                mark = exc.context_mark  # an unterminated quote: where it opens, not where the scan gave up
            where = _mark(mark) if mark is not None else Mark(1, 1)
            message = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem and exc.context_mark is not None:
                message = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
            if "block" in message:  # PyYAML's words for "the indentation does not line up"
                message += "; check the indentation"
            raise YamlSyntaxError(message, file=file, mark=where) from exc
        except yaml.YAMLError as exc:  # e.g. a reader error on a control character
            raise YamlSyntaxError(str(exc), file=file, mark=Mark(1, 1)) from exc
        return doc
    finally:
        loader.dispose()


def load_yaml(path: str | Path, *, file: str | None = None) -> YamlDoc:
    """Read and parse a UTF-8 YAML file. ``file`` is the name used in messages (default: ``path``).

    Raises OSError when the file cannot be read, YamlSyntaxError when it is not valid YAML.
    """
    name = file if file is not None else str(path)
    with Path(path).open("rb") as f:  # bounded: `policy: /dev/zero` must not read forever
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise YamlSyntaxError(
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; is this the right file?",
            file=name,
            mark=Mark(1, 1),
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise YamlSyntaxError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            file=name,
            mark=Mark(line, col),
        ) from exc
    return parse_yaml(text, file=name)
