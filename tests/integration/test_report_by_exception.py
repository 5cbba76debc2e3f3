"""Report by exception in the service: the bundled simulator over a real socket, a real SQLite outbox,
a fake clock stepping 5 s per poll. The outbox keeps what the rules say; snapshot and ledger see every
poll; a device without `report:` is stored at every poll; a reload keeps unchanged points' state."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.base import Reading
from edge_agent.config.load import ConfigError, load_config
from edge_agent.core.clock import FakeClock
from edge_agent.service.service import Service
from tests.integration.test_service import running_sim, write_site

T0 = datetime(2026, 7, 15, 5, 50, tzinfo=UTC)  # 10 minutes before a 15-minute boundary
POLL_S = 5.0


def _with_report(text: str) -> str:
    # main-meter: a device rule (its counter falls back to the periodic report), its power point overrides.
    text = text.replace(
        "    unit_id: 1\n    interval_s: 0.5\n",
        "    unit_id: 1\n    interval_s: 0.5\n    report: {deadband: 0.5, max_interval_s: 300}\n",
    )
    text = text.replace(
        "{id: main.power, table: input, address: 4, type: float32, unit: kW, role: power}",
        "{id: main.power, table: input, address: 4, type: float32, unit: kW, role: power, "
        "report: {deadband_pct: 1, max_interval_s: 60}}",
    )
    return text.replace(
        "    unit_id: 13\n    zone: f2\n    interval_s: 0.5\n",
        "    unit_id: 13\n    zone: f2\n    interval_s: 0.5\n"
        "    report: {deadband: 0.5, max_interval_s: 120}\n",
    )


async def _poll_all(svc: Service, clock: FakeClock) -> None:
    clock.advance(POLL_S)
    for dev_id in svc.agent.devices:
        await svc.agent.poll_once(dev_id)
    await svc.flush()


async def test_outbox_keeps_the_exceptions_snapshot_and_ledger_every_poll(tmp_path: Path) -> None:
    async with running_sim() as sim:
        site = write_site(tmp_path / "cfg", sim_port=sim.modbus_port, edit=_with_report)
        cfg = load_config(site)
        clock = FakeClock(T0)
        svc = Service(cfg, state_dir=tmp_path / "state", clock=clock)
        polled: dict[str, list[Reading]] = {}

        def record(_dev: str, readings: object, _changed: object) -> None:
            for r in readings:  # type: ignore[attr-defined]
                polled.setdefault(r.point_id, []).append(r)

        svc.agent.listeners.append(record)
        try:
            for _ in range(240):  # 20 minutes of polls, across the 06:00 UTC slot boundary
                await _poll_all(svc, clock)
            rows = svc.outbox.pending(0, 100_000)
            rules = svc._report_rules
            ledger_states = svc.ledger.baselines()
        finally:
            svc.close()

    stored: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        assert isinstance(row.value, int | float)
        stored.setdefault(row.point, []).append((row.ts_us, float(row.value)))
    polls = len(polled["main.energy"])
    assert polls == 240
    # No `report:` on the lighting and AC meters: every poll stored, as before.
    for pid in ("f2.ls.energy", "f2.ls.power", "f2.ac.energy", "f2.ac.power"):
        assert pid not in rules and len(stored[pid]) == polls
    assert set(rules) == {"main.power", "main.energy", *(p for p in polled if p.startswith("f2-ac1."))}
    assert len(rows) < 10 * polls  # the steady AC unit's points are held back
    assert svc.readings_unreported == 10 * polls - len(rows)
    # The ledger saw every poll (its baseline is the last poll), the snapshot too.
    assert ledger_states["main.energy"][1] == polled["main.energy"][-1].ts
    # The consumer's reconstruction: at every poll the last received value is within the rule's band
    # and no older than its max_interval_s.
    for pid, rule in rules.items():
        got = stored[pid]
        k = -1
        for r in polled[pid]:
            t_us = int(r.ts.timestamp() * 1_000_000)
            while k + 1 < len(got) and got[k + 1][0] <= t_us:
                k += 1
            assert k >= 0, pid
            last_us, last_value = got[k]
            assert (t_us - last_us) / 1e6 < rule.max_interval_s, pid
            if rule.on_change:
                assert isinstance(r.value, int | float)
                assert abs(float(r.value) - last_value) <= rule.band(last_value) + 1e-9, pid
    # The counter: the first poll of each 15-minute slot is stored, and at least every 300 s.
    energy_slots = {math.floor(ts / 1e6 / 900) for ts, _ in stored["main.energy"]}
    polled_slots = {math.floor(r.ts.timestamp() / 900) for r in polled["main.energy"]}
    assert energy_slots == polled_slots
    first_in_new_slot = next(r for r in polled["main.energy"] if r.ts >= datetime(2026, 7, 15, 6, tzinfo=UTC))
    assert int(first_in_new_slot.ts.timestamp() * 1_000_000) in {ts for ts, _ in stored["main.energy"]}
    assert 4 <= len(stored["main.energy"]) <= 8  # 20 min: every 300 s plus the slot boundary


async def test_reload_keeps_the_state_of_unchanged_points(tmp_path: Path) -> None:
    async with running_sim() as sim:
        site = write_site(tmp_path / "cfg", sim_port=sim.modbus_port, edit=_with_report)
        clock = FakeClock(T0)
        svc = Service(load_config(site), state_dir=tmp_path / "state", clock=clock)
        try:
            for _ in range(3):
                await _poll_all(svc, clock)
            site.write_text(
                site.read_text().replace("max_interval_s: 60}", "max_interval_s: 90}"), encoding="utf-8"
            )
            await svc.apply_config(load_config(site))
            assert "main.power" not in svc.report_filter  # its rule changed: starts afresh
            assert "f2-ac1.setpoint" in svc.report_filter  # unchanged: keeps its last report
            before = svc.outbox.stats().newest_seq
            await _poll_all(svc, clock)
            points = {r.point for r in svc.outbox.pending(before, 1000)}
            assert "main.power" in points
            assert not points & {"f2-ac1.setpoint", "f2-ac1.mode", "f2-ac1.power"}  # no burst after a reload
        finally:
            svc.close()


def test_both_deadbands_is_an_error_with_its_position(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return _with_report(text).replace(
            "{deadband: 0.5, max_interval_s: 300}", "{deadband: 0.5, deadband_pct: 1}"
        )

    site = write_site(tmp_path, sim_port=1, edit=edit)
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    text = str(exc.value)
    assert "devices[0].report" in text and "not both" in text
    line = next(i for i, s in enumerate(site.read_text().splitlines(), 1) if "deadband_pct: 1}" in s)
    assert f"site.yaml:{line}:" in text


def test_no_report_anywhere_means_every_poll(tmp_path: Path) -> None:
    cfg = load_config(write_site(tmp_path / "cfg", sim_port=1))
    svc = Service(cfg, state_dir=tmp_path / "state", clock=FakeClock(T0))
    try:
        assert svc._report_rules == {}
    finally:
        svc.close()
