"""YAML loading that remembers where every key and value came from.

PyYAML builds plain Python data and forgets positions; error messages need ``FILE:LINE:COL``. We
compose the node tree once, build the data with PyYAML's safe constructor (tags, merges and
anchors behave as usual) and walk the same tree to record the mark of each key and value by its
path (``("devices", 3, "points", 7, "address")``). The walk also finds duplicate keys in one
mapping, which PyYAML silently resolves by keeping the last one.

The marks are only needed to position a problem, and the node tree that carries them is most of the
time and memory a large file costs (issue 18: `check`, start-up and RSS of a 10,000-point site: 450
bytes of nodes and marks per value, freed after loading but leaving the heap fragmented). So a plain
document (no anchors, aliases, merge keys, explicit tags or duplicate keys: what integrators write) is
built straight from libyaml's event stream, one event at a time; anything else takes the node path. A
quick scan of the node tree also skips the walk when it would report nothing. Either way, when the
walk was skipped, the marks are recorded the first time something asks for one, by parsing again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
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


class YamlDoc:
    """Plain data (dicts, lists, scalars) plus the positions of its parts (recorded when first asked
    for, if the document was parsed without them: ``text``)."""

    __slots__ = ("_key_marks", "_text", "_value_marks", "data", "duplicates", "file")

    def __init__(self, *, file: str, data: Any, text: str | None = None) -> None:
        self.file = file
        self.data = data
        self.duplicates: list[DuplicateKey] = []
        self._key_marks: dict[YamlPath, Mark] = {}
        self._value_marks: dict[YamlPath, Mark] = {}
        self._text = text

    @property
    def key_marks(self) -> dict[YamlPath, Mark]:
        self._record_marks()
        return self._key_marks

    @property
    def value_marks(self) -> dict[YamlPath, Mark]:
        self._record_marks()
        return self._value_marks

    def _record_marks(self) -> None:
        if self._text is not None:
            text, self._text = self._text, None
            full = parse_yaml(text, file=self.file, marks=True)
            self._key_marks, self._value_marks = full.key_marks, full.value_marks

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
                self.doc._value_marks.setdefault(path, _mark(node.start_mark))
            else:
                self.doc._value_marks[path] = _mark(node.start_mark)
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
                self.doc._key_marks.setdefault(sub, here)
            else:
                self.doc._key_marks[sub] = here
            self.walk(value_node, sub, merged=merged)
        # Merged keys (<<: *defaults) never override explicit ones, so record them only if absent.
        for m in merges:
            sources = m.value if isinstance(m, SequenceNode) else [m]
            for src in sources:
                if isinstance(src, MappingNode):
                    self._mapping(src, path, merged=True)


def _nothing_to_report(loader: Any, root: Node) -> bool:
    """True when walking ``root`` would record marks only: no duplicate or merge keys, no recursive
    alias, at most MAX_NODES values with aliases expanded. Cheap: no paths, no marks, aliases counted
    by multiplication rather than visited again."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int | None:
        if isinstance(node, ScalarNode):
            return 1
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            return None
        active.add(key)
        total = 1
        if isinstance(node, MappingNode):
            seen: set[object] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    return None
                k = _key_value(loader, key_node)
                if not isinstance(k, str | int) or isinstance(k, bool):
                    k = str(k)
                if k in seen:
                    return None
                seen.add(k)
                sub = size(value_node)
                if sub is None:
                    return None
                total += sub
        else:
            for item in node.value:
                sub = size(item)
                if sub is None:
                    return None
                total += sub
        active.discard(key)
        if total > MAX_NODES:
            return None
        sizes[key] = total
        return total

    return size(root) is not None


_NOKEY = object()  # a mapping frame waiting for its next key
_LIST = object()  # a list frame (a mapping's pending key may be None: `~: x`)


def _build_plain(text: str) -> tuple[bool, Any]:
    """(True, data) built from libyaml's events when the document is plain (see the module doc) and
    within MAX_DEPTH and MAX_NODES; (False, None) when the node path must run (and say what is wrong)."""
    if _CLoader is None:
        return False, None
    loader = _CLoader(text)
    try:
        return _events_to_data(loader)
    except (yaml.YAMLError, TypeError, ValueError):  # unhashable key, a scalar its constructor refuses
        return False, None
    finally:
        loader.dispose()


def _events_to_data(loader: Any) -> tuple[bool, Any]:
    fail = (False, None)
    get, resolve, constructors = loader.get_event, loader.resolve, loader.yaml_constructors
    scalars: dict[tuple[str, str], Any] = {}  # (tag, text) -> value: scalars are immutable
    if type(get()) is not yaml.StreamStartEvent:
        return fail
    ev = get()
    if type(ev) is yaml.StreamEndEvent:
        return True, None
    if type(ev) is not yaml.DocumentStartEvent:
        return fail
    # Frames: [container, pending key or _NOKEY] for a mapping, [container, _LIST] for a list.
    stack: list[list[Any]] = []
    root: Any = None
    nodes = 0
    while True:
        ev = get()
        t = type(ev)
        if t is yaml.ScalarEvent:
            if ev.anchor is not None or ev.tag not in (None, "!"):
                return fail
            text = ev.value
            tag = resolve(ScalarNode, text, ev.implicit)
            if tag == _STR_TAG:
                value: Any = text
            else:
                value = scalars.get((tag, text), _NOKEY)
                if value is _NOKEY:
                    construct = constructors.get(tag)
                    if construct is None or tag == _MERGE_TAG:
                        return fail
                    value = scalars[(tag, text)] = construct(loader, ScalarNode(tag, text))
        elif t is yaml.MappingStartEvent or t is yaml.SequenceStartEvent:
            if ev.anchor is not None or ev.tag not in (None, "!") or len(stack) >= MAX_DEPTH:
                return fail
            stack.append([{}, _NOKEY] if t is yaml.MappingStartEvent else [[], _LIST])
            nodes += 1
            continue
        elif t is yaml.MappingEndEvent or t is yaml.SequenceEndEvent:
            value = stack.pop()[0]
        elif t is yaml.DocumentEndEvent:
            return (True, root) if type(get()) is yaml.StreamEndEvent else fail
        else:  # an alias, or anything this builder does not expect
            return fail
        nodes += 1
        if nodes > MAX_NODES:
            return fail
        if not stack:
            root = value
            continue
        frame = stack[-1]
        container = frame[0]
        if frame[1] is _LIST:
            container.append(value)
        elif frame[1] is _NOKEY:
            if isinstance(value, dict | list) or value in container:  # a complex or duplicate key
                return fail
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = _NOKEY


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


def parse_yaml(text: str, *, file: str, marks: bool = False) -> YamlDoc:
    """Parse one YAML document; raises YamlSyntaxError with the position of the problem.

    ``marks``: record every mark now, even when nothing asks for one (otherwise on first use).

    Refuses, with a position, what would otherwise exhaust the process: characters YAML does not allow,
    nesting deeper than MAX_DEPTH and more than MAX_NODES values once aliases are expanded."""
    _check_characters(text, file)
    if not marks:
        plain, data = _build_plain(text)
        if plain:
            return YamlDoc(file=file, data=data, text=text)
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
                if not marks and _nothing_to_report(loader, node):
                    doc = YamlDoc(file=file, data=None, text=text)
                else:
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
