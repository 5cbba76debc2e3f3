"""`edge-agent meter replace`: a recorded swap keeps the old meter's energy, excludes the jump, is audited.
`meter steps|confirm|book`: a step the ledger detected is an audited finding until an operator decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import Quality, Reading
from edge_agent.cli.app import main
from edge_agent.config.load import load_config
from edge_agent.core.clock import FakeClock
from edge_agent.core.validate import ValidatedReading, Validator
from edge_agent.report.build import build_report
from edge_agent.report.html import render_html
from edge_agent.store.audit import AuditLog, verify
from edge_agent.store.db import open_state_db
from edge_agent.store.ledger import Ledger, parse_period

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "config" / "site.yaml")
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    conn = open_state_db(path)
    led = Ledger.from_config(load_config(SITE), conn)
    led.ingest(
        [
            ValidatedReading(Reading("main.energy", 1000.0 + i, T0 + timedelta(minutes=5 * i), Quality.GOOD))
            for i in range(4)
        ]
    )
    conn.close()
    return path


def test_replace_books_the_old_meter_and_excludes_the_jump(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["meter", "replace", "main.energy", "-c", SITE, "--db", str(db)]
    assert main([*argv, "--old-final", "1004.5", "--new-initial", "12", "--at", "2026-03-02T09:20"]) == 0
    out = capsys.readouterr().out
    assert "main.energy: replaced at 2026-03-02T09:20:00+08:00" in out and "-992.500 kWh excluded" in out
    conn = open_state_db(db)
    try:
        led = Ledger.from_config(load_config(SITE), conn)
        led.ingest([ValidatedReading(Reading("main.energy", 14.0, T0 + timedelta(minutes=25), Quality.GOOD))])
        t = led.totals(T0, T0 + timedelta(days=1))["main.energy"]
        assert t.total == pytest.approx(3 + 1.5 + 2)  # old meter to its final reading, new meter from 12
        assert t.rebased == pytest.approx(-992.5)
        rec = led.reconcile("main.energy")
        assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9)
        (audit,) = [r for r in AuditLog(conn=conn, clock=FakeClock(T0)).records() if r.kind == "meter"]
        assert (audit.subject, audit.before, audit.after, audit.rule) == (
            "main.energy",
            1004.5,
            12.0,
            "ledger.meter_replaced",
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--at", "2026-03-02T09:05"], "not after the last booked reading"),
        (["--at", "yesterday"], "not an ISO 8601 time"),
        (["--old-final", "900"], "below the last booked"),
    ],
)
def test_bad_input_is_a_clear_error(
    db: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    base = {"--old-final": "1004.5", "--new-initial": "12", "--at": "2026-03-02T09:20"}
    for i in range(0, len(extra), 2):
        base[extra[i]] = extra[i + 1]
    argv = [
        "meter",
        "replace",
        "main.energy",
        "-c",
        SITE,
        "--db",
        str(db),
        *[x for kv in base.items() for x in kv],
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (
        main(
            [
                "meter",
                "replace",
                "nope",
                "-c",
                SITE,
                "--db",
                str(db),
                "--old-final",
                "1",
                "--new-initial",
                "0",
            ]
        )
        == 2
    )
    assert "not a ledger meter" in capsys.readouterr().err


def test_a_detected_step_is_listed_audited_and_booked_by_the_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    cfg = load_config(SITE)
    conn = open_state_db(path)
    led = Ledger.from_config(cfg, conn)
    val = Validator(points=[p for _, p in cfg.points()])
    counter = 1000.0
    for i in range(24):  # 1 kWh per 5 minutes; the counter steps up 500 kWh at 10:00 (a meter catching up)
        counter += 500.0 if i == 12 else 1.0
        v = val.validate(Reading("main.energy", counter, T0 + timedelta(minutes=5 * i), Quality.GOOD))
        led.ingest([v])
    # the report shows it as pending, with its amount and unit
    report = build_report(cfg=cfg, ledger=led, period=parse_period("2026-03"))
    (step,) = report.quality.steps
    assert (step.point, step.amount, step.unit, step.status) == ("main.energy", 500.0, "kWh", "pending")
    (main_meter,) = [m for m in report.meters if m.point == "main.energy"]
    assert main_meter.pending_steps == 500.0
    html = render_html(report)
    assert "Counter steps detected" in html and "待确认 pending (meter confirm|book)" in html
    conn.close()
    db = ["-c", SITE, "--db", str(path)]
    assert main(["meter", "steps", *db]) == 0
    out = capsys.readouterr().out
    assert "main.energy  at 2026-03-02T10:00:00+08:00" in out and "500.000 kWh excluded, pending" in out
    assert main(["meter", "book", "main.energy", *db, "--at", "2026-03-02T10:00"]) == 0
    assert "booked" in capsys.readouterr().out
    assert main(["meter", "steps", *db]) == 0
    assert "no pending counter steps" in capsys.readouterr().out
    assert main(["meter", "confirm", "main.energy", *db]) == 2
    assert "no pending step" in capsys.readouterr().err
    conn = open_state_db(path)
    try:
        led = Ledger.from_config(cfg, conn)
        t = led.totals(T0, T0 + timedelta(days=1))["main.energy"]
        assert t.total == pytest.approx(522) and t.excluded == 0.0
        rec = led.reconcile("main.energy")
        assert rec is not None and rec.discrepancy == pytest.approx(0, abs=1e-9)
        records = list(AuditLog(conn=conn, clock=FakeClock(T0)).records())
        assert [(r.kind, r.result, r.rule) for r in records] == [
            ("finding", "counter_step", "ledger.step"),  # audited when found (here: by the command)
            ("meter", "booked", "ledger.step_booked"),
        ]
        assert "500.000 kWh: energy: booked as estimated" in records[1].reason
        assert verify(conn).ok
    finally:
        conn.close()
