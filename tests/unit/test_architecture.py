"""The dependency rule, checked on the source: which package may import which, no cycles, no private names
across modules, and only edge_agent/cli prints or reads argv.

The table below is the one in docs/architecture.md (a test keeps the two equal). A unit is a top-level
package (policies, sim), a module or protocol folder of drivers (drivers.base, drivers.registry,
drivers.modbus, ...), or a sub-package of edge_agent (edge_agent.store, ...).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_agent", "drivers", "policies", "sim")
DRIVER_PROTOCOLS = "drivers.<protocol>"  # every folder of drivers/ (modbus, bacnet, ...)

# unit -> the units it may import. `edge_agent` (the root: __version__) is open to every part of the shell.
ALLOWED: Mapping[str, frozenset[str]] = {
    "policies": frozenset(),
    "sim": frozenset(),
    "drivers.base": frozenset(),
    "drivers.spec": frozenset({"drivers.base"}),
    "drivers.serialbus": frozenset({"drivers.base", "drivers.spec"}),
    DRIVER_PROTOCOLS: frozenset({"drivers.base", "drivers.spec", "drivers.serialbus"}),
    "drivers.registry": frozenset({"drivers.base", "drivers.spec", DRIVER_PROTOCOLS}),
    "edge_agent": frozenset(),
    "edge_agent.core": frozenset({"drivers.base", "policies"}),
    "edge_agent.config": frozenset({"drivers.base", "drivers.spec", "drivers.registry", "policies"}),
    "edge_agent.store": frozenset({"edge_agent.core", "edge_agent.config", "drivers.base"}),
    "edge_agent.ops": frozenset({"edge_agent.core", "edge_agent.config"}),
    "edge_agent.enforce": frozenset(
        {"edge_agent.core", "edge_agent.config", "edge_agent.store", "drivers.base", "policies"}
    ),
    "edge_agent.uplink": frozenset(
        {"edge_agent.core", "edge_agent.config", "edge_agent.store", "drivers.base"}
    ),
    "edge_agent.report": frozenset(
        {"edge_agent.core", "edge_agent.config", "edge_agent.store", "drivers.base"}
    ),
    "edge_agent.service": frozenset(
        {
            "edge_agent.core",
            "edge_agent.config",
            "edge_agent.store",
            "edge_agent.ops",
            "edge_agent.enforce",
            "edge_agent.uplink",
            "drivers.base",
            "drivers.spec",
            "drivers.registry",
            "policies",
        }
    ),
    "edge_agent.devtools": frozenset(
        {
            "edge_agent.core",
            "edge_agent.config",
            "edge_agent.store",
            "edge_agent.ops",
            "edge_agent.enforce",
            "edge_agent.uplink",
            "edge_agent.report",
            "edge_agent.service",
            "drivers.base",
            "drivers.spec",
            "drivers.registry",
            DRIVER_PROTOCOLS,
            "policies",
            "sim",
        }
    ),
    "edge_agent.cli": frozenset(
        {
            "edge_agent.core",
            "edge_agent.config",
            "edge_agent.store",
            "edge_agent.ops",
            "edge_agent.enforce",
            "edge_agent.uplink",
            "edge_agent.report",
            "edge_agent.service",
            "edge_agent.devtools",
            "drivers.base",
            "drivers.spec",
            "drivers.registry",
            DRIVER_PROTOCOLS,
            "policies",
            "sim",
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Import:
    file: str  # relative to the scanned root
    line: int
    importer: str  # dotted module name
    module: str  # dotted module imported
    names: tuple[str, ...]  # names taken from it (from-imports)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str, root: Path) -> str | None:
    """The table's unit of a dotted module name; None for modules outside the project."""
    parts = module.split(".")
    top = parts[0]
    if top not in PACKAGES:
        return None
    if top == "drivers":
        if len(parts) == 1 or parts[1] == "base":
            return "drivers.base"  # the package's own __init__ belongs to the interface
        return f"drivers.{parts[1]}" if parts[1] in ("registry", "spec", "serialbus") else DRIVER_PROTOCOLS
    if top == "edge_agent":
        if len(parts) > 1 and (root / "edge_agent" / parts[1]).is_dir():
            return f"edge_agent.{parts[1]}"
        return "edge_agent"
    return top


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def scan(root: Path) -> list[Import]:
    """Every import of a project module, at any depth (lazy imports inside functions count too)."""
    out: list[Import] = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            importer = module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found = [(a.name, ()) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found = [(node.module, tuple(a.name for a in node.names))]
                elif isinstance(node, ast.ImportFrom):
                    raise AssertionError(
                        f"{path}:{node.lineno}: relative import; the rule reads absolute ones"
                    )
                else:
                    continue
                rel = str(path.relative_to(root))
                for mod, names in found:
                    if mod.split(".")[0] not in PACKAGES:
                        continue
                    # `from pkg import mod` depends on pkg.mod itself, not only on pkg's __init__
                    subs = [n for n in names if _is_module(root, f"{mod}.{n}")]
                    rest = tuple(n for n in names if n not in subs)
                    out.append(Import(rel, node.lineno, importer, mod, rest))
                    out.extend(Import(rel, node.lineno, importer, f"{mod}.{n}", ()) for n in subs)
    return out


def rule_violations(
    imports: Iterable[Import], root: Path, allowed: Mapping[str, frozenset[str]]
) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = unit_of(imp.importer, root), unit_of(imp.module, root)
        if src is None or dst is None or src == dst:
            continue
        if src.startswith("edge_agent") and dst == "edge_agent":
            continue
        if dst not in allowed.get(src, frozenset()):
            bad.append(f"{imp.file}:{imp.line}: {src} may not import {dst} ({imp.module})")
    return bad


def private_imports(imports: Iterable[Import]) -> list[str]:
    """`from a.b import _x` where a.b is another module: a private name used across modules."""
    bad = []
    for imp in imports:
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__") and imp.module != imp.importer:
                bad.append(f"{imp.file}:{imp.line}: imports private {imp.module}.{name}")
    return bad


def module_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set()).add(imp.module)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            # A package's __init__ re-exporting its own module is not a design cycle.
            if len(comp) > 1 and not all(c.startswith(min(comp, key=len)) for c in comp):
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def prints_outside_cli(root: Path) -> list[str]:
    """print(), sys.argv and argparse anywhere in edge_agent/ but cli/: only the CLI talks to the terminal."""
    bad = []
    for path in sorted((root / "edge_agent").rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[1] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{rel}:{node.lineno}: print()")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "argv"
                and getattr(node.value, "id", "") == "sys"
            ):
                bad.append(f"{rel}:{node.lineno}: sys.argv")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "argparse" in mods:
                    bad.append(f"{rel}:{node.lineno}: import argparse")
    return bad


# --- the project ---------------------------------------------------------------------------------------


def test_every_import_follows_the_table() -> None:
    assert rule_violations(scan(ROOT), ROOT, ALLOWED) == []


def test_the_table_has_no_cycle() -> None:
    seen: dict[str, int] = {}

    def depth(unit: str, path: tuple[str, ...] = ()) -> int:
        assert unit not in path, f"cycle in the table: {' -> '.join((*path, unit))}"
        if unit not in seen:
            seen[unit] = 1 + max((depth(d, (*path, unit)) for d in ALLOWED[unit]), default=0)
        return seen[unit]

    for unit in ALLOWED:
        depth(unit)


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports(scan(ROOT)) == []


def test_no_import_cycles_between_modules() -> None:
    assert module_cycles(scan(ROOT)) == []


def test_only_the_cli_prints_or_reads_argv() -> None:
    assert prints_outside_cli(ROOT) == []


def test_every_shell_subpackage_is_in_the_table() -> None:
    subpackages = {
        f"edge_agent.{p.name}" for p in (ROOT / "edge_agent").iterdir() if (p / "__init__.py").exists()
    }
    assert subpackages <= ALLOWED.keys()


def _doc_table() -> dict[str, frozenset[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows: dict[str, frozenset[str]] = {}
    for m in re.finditer(r"^\| `([\w.<>]+)` \| (.*?) \|$", text, re.M):
        deps = frozenset(re.findall(r"`([\w.<>]+)`", m.group(2)))
        rows[m.group(1)] = deps
    return rows


def test_docs_architecture_holds_the_same_table() -> None:
    assert _doc_table() == dict(ALLOWED)


# --- the checker itself fails where it should ------------------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.parent.name != "drivers" and p.parent != tmp_path:
            (p.parent / "__init__.py").touch()
        p.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        (
            "drivers/modbus/driver.py",
            "from edge_agent.core.clock import Clock\n",
            "drivers.<protocol> may not import edge_agent.core",
        ),
        ("policies/hvac.py", "def f():\n    import drivers.base\n", "policies may not import drivers.base"),
        ("sim/building.py", "from drivers.modbus import codec\n", "sim may not import drivers.<protocol>"),
        (
            "edge_agent/store/ledger.py",
            "from edge_agent.report.kpi import to_kgce\n",
            "edge_agent.store may not import edge_agent.report",
        ),
        (
            "edge_agent/config/load.py",
            "from edge_agent.service.agent import Agent\n",
            "edge_agent.config may not import edge_agent.service",
        ),
        (
            "edge_agent/devtools/demo.py",
            "from edge_agent.cli.common import load_or_exit\n",
            "edge_agent.devtools may not import edge_agent.cli",
        ),
    ],
)
def test_checker_reports_a_forbidden_import(tmp_path: Path, rel: str, text: str, expected: str) -> None:
    root = _tree(tmp_path, {rel: text, "edge_agent/cli/common.py": "", "edge_agent/report/kpi.py": "",
                            "edge_agent/service/agent.py": "", "edge_agent/core/clock.py": ""})  # fmt: skip
    found = rule_violations(scan(root), root, ALLOWED)
    assert len(found) == 1 and expected in found[0] and found[0].startswith(f"{rel}:")


def test_checker_reports_private_names_cycles_and_prints(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "edge_agent/store/a.py": "from edge_agent.store.b import _hidden\n",
            "edge_agent/store/b.py": "def f():\n    from edge_agent.store import a\n",
            "edge_agent/ops/c.py": "import argparse\nprint('hi')\n",
        },
    )
    imports = scan(root)
    assert private_imports(imports) == ["edge_agent/store/a.py:1: imports private edge_agent.store.b._hidden"]
    assert module_cycles(imports) == [["edge_agent.store.a", "edge_agent.store.b"]]
    assert prints_outside_cli(root) == [
        "edge_agent/ops/c.py:1: import argparse",
        "edge_agent/ops/c.py:2: print()",
    ]
