"""The safety envelope holds for the value the device will hold, and check refuses envelopes that are off.

Issue 14 items 1 and 2: NaN/inf bounds, scale 0 and writable numeric points with a missing bound are
refused by ``check`` at FILE:LINE:COL; a request inside [min, max] that the register's step would round
outside is moved inward (or refused), so that for any finite bounds, scale, offset and register type no
value outside [min, max] reaches the device. The fake driver below is faked at the project's own Driver
interface and puts on its "device" what the real Modbus codec would (encode, then decode).
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from drivers.base import Driver, FailureCode, PointBase, Reading, Value, WriteResult
from drivers.modbus.codec import CodecError, decode, encode
from drivers.modbus.options import ModbusPoint
from edge_agent.cli.check import check_main
from edge_agent.config.load import ConfigError, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.enforce.actuator import Actuator
from edge_agent.store.audit import AuditLog, verify
from edge_agent.store.db import open_state_db
from policies.types import WriteIntent

START = datetime(2026, 7, 15, 6, 0, 0, tzinfo=UTC)
FIX = Path(__file__).resolve().parent.parent / "fixtures" / "config"
NUMERIC = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")


class CodecDevice:
    """A Driver whose device holds what the Modbus codec puts into registers: encode, then decode."""

    def __init__(self, device_id: str = "mb-1") -> None:
        self.device_id = device_id
        self.held: list[tuple[str, float]] = []  # (point, value the device holds) for every write that landed

    async def connect(self) -> None:
        pass

    async def run(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def read(self, points: Sequence[PointBase]) -> list[Reading]:
        raise NotImplementedError

    async def write(self, point: PointBase, value: Value, *, priority: int | None = None) -> WriteResult:
        assert isinstance(point, ModbusPoint)
        try:
            regs = encode(value, point)
        except CodecError as exc:  # nothing reaches the device
            return WriteResult(point.id, value, None, False, exc.code, str(exc))
        held = decode(regs, point)
        assert isinstance(held, int | float)
        self.held.append((point.id, float(held)))
        return WriteResult(point.id, value, held, True)


def point(type_: str = "int16", **kw: Any) -> ModbusPoint:
    kw.setdefault("role", "setpoint")
    return ModbusPoint(id="sp", address=0, type=type_, writable=True, **kw)  # type: ignore[arg-type]


async def apply(db: Path, p: ModbusPoint, value: float) -> tuple[CodecDevice, Any, AuditLog]:
    dev = CodecDevice()
    conn = open_state_db(db)
    conn.execute("PRAGMA synchronous=OFF")
    audit = AuditLog(conn=conn, clock=FakeClock(START))
    drivers: dict[str, Driver] = {"mb-1": dev}
    act = Actuator(
        drivers=drivers,
        points={p.id: ("mb-1", p)},
        audit=audit,
        clock=FakeClock(START),
        max_writes_per_hour=99,
    )
    [out] = await act.apply([WriteIntent(p.id, value, "hvac.summer_min_cooling", "夏季不低于26°C")])
    assert verify(conn).ok
    return dev, out, audit


# --- check refuses an envelope that is switched off ------------------------------------------------------


def _site_with(tmp_path: Path, replace: str) -> Path:
    text = (FIX / "valid_site.yaml").read_text(encoding="utf-8")
    old = "scale: 0.1, unit: degC, role: setpoint, writable: true, min: 16, max: 30}"
    assert old in text
    site = tmp_path / "site.yaml"
    site.write_text(text.replace(old, replace), encoding="utf-8")
    for f in FIX.iterdir():  # the policy file and anything else the site names
        if f.name != "valid_site.yaml" and f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    return site


@pytest.mark.parametrize(
    ("replace", "path", "words"),
    [
        ("scale: 0.1, role: setpoint, writable: true, min: .nan, max: 30}", "min", "finite"),
        ("scale: 0.1, role: setpoint, writable: true, min: 16, max: .inf}", "max", "finite"),
        ("scale: 0.1, role: setpoint, writable: true, min: -.inf, max: 30}", "min", "finite"),
        ("scale: 0, role: setpoint, writable: true, min: 16, max: 30}", "scale", "scale 0"),
        ("scale: .nan, role: setpoint, writable: true, min: 16, max: 30}", "scale", "finite"),
        ("scale: 0.1, offset: .inf, role: setpoint, writable: true, min: 16, max: 30}", "offset", "finite"),
        ("scale: 0.1, role: setpoint, writable: true}", "", "needs both `min:` and `max:`"),
        ("scale: 0.1, role: setpoint, writable: true, min: 16}", "", "needs both `min:` and `max:`"),
    ],
)
def test_check_refuses_envelopes_that_are_off(tmp_path: Path, replace: str, path: str, words: str) -> None:
    site = _site_with(tmp_path, replace)
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    [issue] = [i for i in exc.value.issues if i.severity == "error"]
    assert issue.path == "devices[0].points[0]" + (f".{path}" if path else "")
    assert issue.line == 22 and issue.col >= 9
    assert words in issue.message
    out, err = io.StringIO(), io.StringIO()
    assert check_main(site, out=out, err=err) == 2
    assert f"site.yaml:22:{issue.col}" in out.getvalue() + err.getvalue()


def test_bounds_are_not_needed_on_on_off_and_enumerated_points() -> None:
    assert point("bit", bit=0, role="light_relay").value_kind() == "bool"
    assert point("uint16", role="ac_mode", states={0: "off", 1: "cool"}).value_kind() == "enum"
    assert ModbusPoint(id="c", address=0, table="coil", type="bool", writable=True).value_kind() == "bool"


# --- the value the device will hold -----------------------------------------------------------------------


async def test_a_request_that_rounds_below_min_is_moved_inward(tmp_path: Path) -> None:
    # The outsider's case: scale 2, min 21; a request for 21 would put 20.0 on the device.
    dev, out, audit = await apply(tmp_path / "s.db", point(scale=2, min=21, max=30), 21)
    assert dev.held == [("sp", 22.0)]
    assert out.ok and out.readback == 22
    [rec] = [r for r in audit.records() if r.kind == "write"]
    assert rec.result == "ok" and "moved inward to 22.0" in rec.reason and "below min 21.0" in rec.reason


async def test_a_request_that_rounds_above_max_is_moved_inward(tmp_path: Path) -> None:
    dev, out, _ = await apply(tmp_path / "s.db", point(scale=0.5, offset=0.3, min=16, max=26.5), 26.5)
    # 26.5 -> raw 52.4 -> 52 -> 26.3: inside; 26.6 is refused as above max before any rounding
    assert dev.held == [("sp", pytest.approx(26.3))] and out.ok


async def test_no_representable_value_inside_the_bounds_is_refused(tmp_path: Path) -> None:
    dev, out, audit = await apply(tmp_path / "s.db", point(scale=2, min=21, max=21.5), 21)
    assert dev.held == []
    assert (out.status, out.code) == ("refused", FailureCode.BELOW_MIN)
    [rec] = [r for r in audit.records() if r.kind == "refused"]
    assert "after rounding to the register's step" in rec.reason


async def test_a_value_the_register_cannot_hold_is_refused(tmp_path: Path) -> None:
    dev, out, _ = await apply(tmp_path / "s.db", point("int16", min=0, max=1e6), 70000)
    assert dev.held == [] and (out.status, out.code) == ("refused", FailureCode.RANGE)


async def test_float32_rounding_above_a_bound_is_moved_inward(tmp_path: Path) -> None:
    dev, out, _ = await apply(tmp_path / "s.db", point("float32", min=16, max=26.1), 26.1)
    [(_, held)] = dev.held
    assert out.ok and held <= 26.1 and held == pytest.approx(26.1, rel=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(NUMERIC),
    scale=st.floats(-1e4, 1e4, allow_nan=False).filter(lambda s: abs(s) >= 1e-4),
    offset=st.floats(-1e4, 1e4, allow_nan=False),
    value=st.floats(-1e9, 1e9, allow_nan=False),
)
@example(type_="int16", scale=2.0, offset=0.0, value=21.0)
def test_quantize_is_what_the_codec_puts_on_the_device(
    type_: str, scale: float, offset: float, value: float
) -> None:
    p = point(type_, scale=scale, offset=offset, min=-1e12, max=1e12)
    try:
        via_codec: float | None = float(decode(encode(value, p), p))  # type: ignore[arg-type]
    except CodecError:
        via_codec = None
    try:
        mine: float | None = p.quantize(value)
    except ValueError:
        mine = None
    assert (mine is None) == (via_codec is None)
    assert mine == via_codec


_DB = Path(tempfile.mkdtemp(prefix="envelope-")) / "prop.db"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    type_=st.sampled_from(NUMERIC),
    scale=st.one_of(
        st.sampled_from([1.0, 0.1, 0.5, 2.0, 10.0, -1.0, -0.1, 0.01]),
        st.floats(-1e3, 1e3, allow_nan=False).filter(lambda s: abs(s) >= 1e-3),
    ),
    offset=st.one_of(st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False)),
    a=st.floats(-1e6, 1e6, allow_nan=False),
    b=st.floats(-1e6, 1e6, allow_nan=False),
    where=st.floats(0, 1),
    outside=st.floats(-1e7, 1e7, allow_nan=False),
    use_outside=st.booleans(),
)
@example(type_="int16", scale=2.0, offset=0.0, a=21.0, b=30.0, where=0.0, outside=0.0, use_outside=False)
@example(type_="uint16", scale=-0.5, offset=40.0, a=21.1, b=21.3, where=0.5, outside=0.0, use_outside=False)
async def test_no_value_outside_the_bounds_ever_reaches_the_device(
    type_: str,
    scale: float,
    offset: float,
    a: float,
    b: float,
    where: float,
    outside: float,
    use_outside: bool,
) -> None:
    lo, hi = min(a, b), max(a, b)
    value = outside if use_outside else lo + (hi - lo) * where
    assume(math.isfinite(value))
    _DB.unlink(missing_ok=True)
    p = point(type_, scale=scale, offset=offset, min=lo, max=hi)
    dev, out, _ = await apply(_DB, p, value)
    for _pid, held in dev.held:
        assert lo <= held <= hi, f"{held} reached the device outside {lo}..{hi} ({out})"
    if out.ok:
        assert len(dev.held) == 1
