"""The report's JSON document (schema edge-agent.report/1) against a stored expectation.

Consumers read this document; it must not drift by accident. The input is a small synthetic ledger
(exact increments, a filled and an unfilled gap, an excluded outlier, a counter reset, an invalid reading,
last year's data) and audit trail (corrections, a lights-off, a failed write, findings, a refusal), so
every section of the document carries figures. The stored file was written by build_report as it was
before the typed report model (json.dumps of the dict it returned); ``Report.to_json`` must give it byte
for byte.

After a deliberate change of the document (a new schema version), rewrite the expectation with
``python -m tests.unit.test_report_document > tests/fixtures/report/document-2026-07.json`` and review
the diff.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.base import Quality, Reading
from edge_agent.config.load import load_config
from edge_agent.core.clock import FakeClock
from edge_agent.report.build import build_report
from edge_agent.report.model import Report
from edge_agent.store.audit import AuditKind, AuditLog
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, parse_period

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EXPECTED = FIXTURES / "report" / "document-2026-07.json"
TZ = ZoneInfo("Asia/Shanghai")
GENERATED_AT = datetime(2026, 8, 1, 9, 30, 15, 123456, tzinfo=UTC)  # microseconds are not printed

# kWh (m3 for water) per 15 minutes; main = the sub-meters + 1.5 kWh of unmetered common services
STEP = {
    "f1.ls.energy": 1.25,
    "f2.ls.energy": 1.5,
    "f3.ls.energy": 0.75,
    "f1.ac.energy": 2.5,
    "f2.ac.energy": 2.0,
    "f3.ac.energy": 0.5,
    "dc.energy": 5.0,
    "it.energy": 3.75,
    "water.volume": 0.125,
}
STEP["main.energy"] = sum(v for k, v in STEP.items() if k not in ("it.energy", "water.volume")) + 1.5


@dataclass(frozen=True)
class _VR:  # the ledger takes anything with .reading and .flags
    reading: Reading
    flags: tuple[str, ...] = ()


def _readings(start: datetime, days: int, first: float, *, faults: bool) -> Iterator[_VR]:
    short_gap = (start + timedelta(days=1, hours=10), start + timedelta(days=1, hours=10, minutes=45))
    long_gap = (start + timedelta(days=2, hours=9), start + timedelta(days=2, hours=12, minutes=15))
    spike = start + timedelta(days=1, hours=15)
    reset = start + timedelta(days=2, hours=20)
    value = dict.fromkeys(STEP, first)
    for i in range(days * 96 + 1):
        t = start + timedelta(minutes=15 * i)
        ts = t.astimezone(UTC)
        if i:  # air conditioning draws double in office hours; main meter = sub-meters + common services
            for pid, step in STEP.items():
                value[pid] += step * (2 if pid.endswith(".ac.energy") and 8 <= t.hour < 18 else 1)
            value["main.energy"] += sum(
                STEP[p] for p in STEP if p.endswith(".ac.energy") and 8 <= t.hour < 18
            )
        for pid in STEP:
            v, flags = value[pid], ()
            if faults:
                if pid == "f1.ls.energy" and short_gap[0] < t < short_gap[1]:
                    continue
                if pid == "water.volume" and long_gap[0] < t < long_gap[1]:
                    continue
                if pid == "f3.ac.energy" and t == reset:
                    value[pid] = v = 0.0
                    flags = ("counter_reset",)
                if pid == "f3.ls.energy" and t == reset:
                    yield _VR(Reading(pid, None, ts - timedelta(minutes=1), Quality.BAD))
            yield _VR(Reading(pid, v, ts, Quality.GOOD), flags)
            if faults and pid == "f2.ac.energy" and t == spike:  # a glitch, excluded; the baseline stays
                yield _VR(Reading(pid, v + 500.0, ts + timedelta(minutes=5), Quality.GOOD), ("spike",))


def _audit(log: AuditLog, clock: FakeClock) -> None:
    for zone_point, rule, before, after, result in (
        ("f2-ac1.setpoint", "hvac.summer_min_cooling", 22.0, 26.0, "ok"),
        ("f2-ac1.setpoint", "hvac.summer_min_cooling", 23.0, 26.0, "ok"),
        ("f1-ac2.setpoint", "hvac.winter_max_heating", 24.0, 20.0, "ok"),
        ("f1-ac1.power", "hvac.after_hours_off", True, False, "ok"),
        ("f3-l2", "lighting.after_hours_sweep", True, False, "ok"),
        ("f3-l1", "lighting.after_hours_sweep", True, None, "timeout"),
    ):
        log.append(AuditKind.WRITE, subject=zone_point, before=before, after=after, rule=rule,
                   reason="test", result=result)  # fmt: skip
        clock.advance(3600)
    log.append_finding("tamper", subject="f2-ac1.setpoint", rule="enforcement.rate_limit",
                       reason="rewritten 6 times in an hour")  # fmt: skip
    log.append_finding("masked_write", subject="f1-ac1.setpoint", rule="hvac.summer_min_cooling",
                       reason="read back 22.0")  # fmt: skip
    log.append(AuditKind.REFUSED, subject="f3-ac1.setpoint", after=30.0, rule="hvac.summer_min_cooling",
               reason="above max", result="out_of_range")  # fmt: skip


def _policy_with_dated_exemption(dst: Path) -> None:
    text = (FIXTURES / "config" / "modbus_policy.yaml").read_text(encoding="utf-8")
    commented = (
        "    # - zone: f3\n"
        '    #   reason: "Archive room humidity trial, approved by the facilities office"\n'
        "    #   until: 2026-09-30\n"
    )
    assert commented in text, "modbus_policy.yaml changed: update this test's dated exemption"
    dst.write_text(text.replace(commented, commented.replace("# ", "")), encoding="utf-8")


def synthetic_report(workdir: Path) -> Report:
    """The 2026-07 report over the synthetic ledger and audit trail (files under ``workdir``)."""
    shutil.copy(FIXTURES / "config" / "modbus_site.yaml", workdir / "site.yaml")
    _policy_with_dated_exemption(workdir / "modbus_policy.yaml")
    cfg = load_config(workdir / "site.yaml")
    conn = open_state_db(workdir / "state.db")
    try:
        ledger = Ledger.from_config(cfg, conn)
        ledger.ingest(_readings(datetime(2025, 7, 1, tzinfo=TZ), 2, 1000.0, faults=False))
        # Last year's figures came from the previous gateway: the counters' state starts afresh, so the
        # year in between is not booked as one long unfilled gap.
        conn.execute("DELETE FROM ledger_state")
        ledger = Ledger.from_config(cfg, conn)
        ledger.ingest(_readings(datetime(2026, 7, 1, tzinfo=TZ), 3, 100_000.0, faults=True))
        clock = FakeClock(datetime(2026, 7, 2, 14, 0, 5, tzinfo=TZ))
        log = AuditLog(conn=conn, clock=clock)
        _audit(log, clock)
        records = list(log.records())
        period = parse_period("2026-07")
        report = build_report(
            cfg=cfg, ledger=ledger, period=period, audit_records=records, generated_at=GENERATED_AT
        )
    finally:
        conn.close()
    return report


def document(workdir: Path) -> str:
    """The JSON document of the 2026-07 report over the synthetic ledger and audit trail."""
    return synthetic_report(workdir).to_json()


def test_json_document_equals_the_stored_expectation(tmp_path: Path) -> None:
    got = document(tmp_path)
    want = EXPECTED.read_text(encoding="utf-8")
    if got != want:
        (tmp_path / "got.json").write_text(got, encoding="utf-8")
    assert got == want, f"the report document drifted: diff {EXPECTED} {tmp_path / 'got.json'}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        sys.stdout.write(document(Path(d)))
