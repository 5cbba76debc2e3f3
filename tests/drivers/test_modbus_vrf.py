"""The Modbus driver against the simulator's VRF gateway (sim/vrf.py) over TCP: a `repeat:` block of 16
indoor units read in one poll, and mode values the point's `states` do not list read as uncertain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import FailureCode, Quality
from drivers.modbus.driver import EndpointPool, ModbusTcpDriver
from drivers.modbus.options import ModbusDevice, register_count
from sim.modbus_server import ModbusServer
from sim.vrf import VRF_BASE, VRF_INDOOR_UNITS, VRF_MODES, VRF_OIL_RETURN, VRF_STRIDE, VRF_UNIT, VrfGateway

STATES = {raw: canonical for raw, (_text, canonical) in VRF_MODES.items()}


@pytest.fixture
async def vrf() -> AsyncIterator[tuple[VrfGateway, ModbusServer]]:
    gw = VrfGateway()
    srv = ModbusServer(units=[gw.bank])
    await srv.start(host="127.0.0.1", port=0)
    try:
        yield gw, srv
    finally:
        await srv.stop()


def _device(port: int, *, sentinel: bool = False) -> ModbusDevice:
    setpoint: dict[str, Any] = {"id": "setpoint", "address": VRF_BASE + 2, "type": "int16", "scale": 0.1}
    if sentinel:
        setpoint["invalid_raw"] = [0x8000]
    return ModbusDevice.model_validate({
        "protocol": "modbus", "id": "vrf", "host": "127.0.0.1", "port": port, "unit_id": VRF_UNIT,
        "zone": "f1", "max_gap": 0,
        "repeat": [{
            "stride": VRF_STRIDE,
            "units": [{"unit": f"iu{n:02d}"} for n in range(VRF_INDOOR_UNITS)],
            "points": [
                {"id": "mode", "address": VRF_BASE + 1, "role": "ac_mode", "states": STATES},
                setpoint,
                {"id": "room", "table": "input", "address": VRF_BASE, "type": "int16", "scale": 0.1},
            ],
        }],
    })  # fmt: skip


@pytest.mark.parametrize("sentinel", [False, True], ids=["clean_block", "block_with_a_sentinel"])
async def test_an_unlisted_mode_value_reads_uncertain_the_others_good(
    vrf: tuple[VrfGateway, ModbusServer], pool: EndpointPool, sentinel: bool
) -> None:
    gw, srv = vrf
    assert srv.port
    for n in range(VRF_INDOOR_UNITS):
        gw.set_state(n, mode=n % 8, setpoint=20 + n / 2)
    gw.set_state(3, mode=VRF_OIL_RETURN)
    if sentinel:  # a "no value" in iu03's block: the decoder's slow path must flag its mode all the same
        gw.bank.set("holding", VRF_BASE + 3 * VRF_STRIDE + 2, [0x8000])
    dev = _device(srv.port, sentinel=sentinel)
    drv = ModbusTcpDriver(device=dev, pool=pool)
    try:
        readings = {r.point_id: r for r in await drv.read(dev.points)}
    finally:
        await drv.close()
    assert len(readings) == 3 * VRF_INDOOR_UNITS
    odd = readings["vrf.iu03.mode"]
    assert (odd.quality, odd.code, odd.value) == (
        Quality.UNCERTAIN,
        FailureCode.UNKNOWN_STATE,
        VRF_OIL_RETURN,
    )
    for n in range(VRF_INDOOR_UNITS):
        if n == 3:
            continue
        sp, mode = readings[f"vrf.iu{n:02d}.setpoint"], readings[f"vrf.iu{n:02d}.mode"]
        assert sp.quality is Quality.GOOD and sp.value == pytest.approx(20 + n / 2)
        assert (mode.quality, mode.value) == (Quality.GOOD, n % 8)
    assert readings["vrf.iu03.setpoint"].code == (FailureCode.NO_VALUE if sentinel else None)


@settings(max_examples=60, deadline=None)
@given(
    span=st.integers(1, 6),
    extra=st.integers(0, 6),
    indexes=st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True),
    first=st.integers(0, 1000),
)
def test_expansions_are_where_the_stride_puts_them_and_never_overlap(
    span: int, extra: int, indexes: list[int], first: int
) -> None:
    """A template of ``span`` registers at a stride >= span, units at any distinct block numbers: each copy
    is the template moved by index x stride, in its own unit, and no two copies share a register."""
    stride = span + extra
    dev = ModbusDevice.model_validate({
        "protocol": "modbus", "id": "gw", "host": "127.0.0.1", "zone": "f1",
        "repeat": [{
            "stride": stride,
            "units": [{"unit": f"u{i}", "index": i} for i in indexes],
            "points": [{"id": f"r{k}", "address": first + k} for k in range(span)],
        }],
    })  # fmt: skip
    assert len(dev.points) == span * len(indexes)
    used: set[int] = set()
    for i in indexes:
        for k in range(span):
            p = next(p for p in dev.points if p.id == f"gw.u{i}.r{k}")
            assert p.address == first + k + i * stride and p.ac_unit == f"u{i}"
            regs = set(range(p.address, p.address + register_count(p)))
            assert not regs & used
            used |= regs
