"""Rate limit helper the actuator calls, and the purity rule of policies/."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

from policies.enforcement import rate_limited, tamper_finding
from policies.model import Policy
from policies.params import PolicyParams

NOW = datetime(2026, 7, 15, 6, 0, tzinfo=UTC)
POLICY = Policy.model_validate(
    {
        "seasons": {"summer": "06-01..09-30", "winter": None},
        "enforcement": {"max_writes_per_point_per_hour": 3},
    }
)
PARAMS = PolicyParams(policy=POLICY)


def test_rate_limited_counts_only_the_last_hour() -> None:
    assert not rate_limited([], NOW, PARAMS)
    two = [NOW - timedelta(minutes=50), NOW - timedelta(minutes=5)]
    assert not rate_limited(two, NOW, PARAMS)
    three = [*two, NOW - timedelta(minutes=1)]
    assert rate_limited(three, NOW, PARAMS)
    old = [NOW - timedelta(minutes=61), NOW - timedelta(hours=2), *two]
    assert not rate_limited(old, NOW, PARAMS)
    assert not rate_limited(three, NOW + timedelta(minutes=11), PARAMS)  # the oldest fell out
    assert rate_limited(three, NOW, POLICY) and rate_limited(three, NOW, POLICY.enforcement)


def test_writes_after_now_still_count_after_a_clock_step_back() -> None:
    future = [NOW + timedelta(minutes=m) for m in (1, 2, 3)]
    assert rate_limited(future, NOW, PARAMS)


def test_default_limit_is_six() -> None:
    params = PolicyParams(policy=Policy.model_validate({"seasons": {"summer": None, "winter": None}}))
    times = [NOW - timedelta(minutes=i) for i in range(5)]
    assert not rate_limited(times, NOW, params)
    assert rate_limited([*times, NOW], NOW, params)


def test_tamper_finding_carries_point_zone_and_count() -> None:
    times = [NOW - timedelta(minutes=i) for i in range(4)]
    f = tamper_finding("ac-f2-01.setpoint", zone="f2", write_times=times, now=NOW, params=PARAMS)
    assert f.kind == "tamper" and f.subject == "ac-f2-01.setpoint" and f.zone == "f2"
    assert "4 times" in f.reason and "limit 3" in f.reason


# Clock reads are method calls (datetime.now(), date.today()); `time(...)` is datetime.time, data.
FORBIDDEN_METHODS = {
    "now",
    "today",
    "utcnow",
    "monotonic",
    "sleep",
    "perf_counter",
    "read_text",
    "read_bytes",
}
FORBIDDEN_FUNCTIONS = {"open", "print", "input"}
FORBIDDEN_MODULES = {"asyncio", "edge_agent", "drivers", "socket", "time", "os", "subprocess", "pathlib"}


def test_policies_package_is_pure() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {n}"
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute):
                    assert f.attr not in FORBIDDEN_METHODS, f"{path.name}:{node.lineno} calls .{f.attr}()"
                if isinstance(f, ast.Name):
                    assert f.id not in FORBIDDEN_FUNCTIONS, f"{path.name}:{node.lineno} calls {f.id}()"
            assert not isinstance(node, ast.AsyncFunctionDef | ast.Await), f"{path.name} is async"
