"""SIGHUP reload under hostile edits (issue 14 items 6, 7 and 9), in-process against a fake notifier.

A NUL byte and an alias bomb are refused with a position, audited and followed by READY=1 while the
service keeps running on the old configuration; an uplink change is not applied behind the user's back:
the reload record says it needs a restart (result ``needs_restart``) and the running uplink stays.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_agent.config.load import load_config
from edge_agent.service.service import Service
from tests.integration.test_service import FakeNotifier, audit_rows, wait_until, write_site


def _bomb() -> str:
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    for i in range(1, 7):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


async def test_reload_refuses_hostile_files_and_holds_uplink_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    site = write_site(tmp_path / "etc", sim_port=1)
    good = site.read_text(encoding="utf-8")
    notifier = FakeNotifier()
    svc = Service(load_config(site), state_dir=tmp_path / "state", notifier=notifier)  # type: ignore[arg-type]
    db = svc.db_path
    run = asyncio.create_task(svc.run(), name="service")

    async def reload_with(text: str) -> dict[str, object]:
        site.write_text(text, encoding="utf-8")
        n = sum(r["kind"] == "reload" for r in audit_rows(db))
        mark = len(notifier.calls)
        svc.request_reload()
        await wait_until(
            lambda: sum(r["kind"] == "reload" for r in audit_rows(db)) == n + 1, 20, "reload record"
        )
        await wait_until(lambda: "ready" in [k for k, _ in notifier.calls[mark:]], 5, "READY=1 after reload")
        kinds = [k for k, _ in notifier.calls[mark:]]
        assert kinds.index("reloading") < kinds.index("ready")
        return [r for r in audit_rows(db) if r["kind"] == "reload"][-1]

    try:
        await wait_until(lambda: notifier.count("ready") == 1, 10, "READY")

        nul = await reload_with(good.replace("gateway_id:", "gateway_id:\x00", 1))
        line = good.splitlines().index(next(x for x in good.splitlines() if x.startswith("gateway_id:"))) + 1
        assert nul["result"] == "refused" and f"{site}:{line}:12: U+0000 (NUL)" in str(nul["reason"])

        bomb = await reload_with(_bomb())
        assert bomb["result"] == "refused" and "aliases" in str(bomb["reason"])

        with_uplink = await reload_with(good + "uplink: {host: 127.0.0.1, port: 1}\n")
        assert with_uplink["result"] == "needs_restart"
        assert "NOT applied: uplink changed and need a restart" in str(with_uplink["reason"])
        assert svc.uplink is None and svc.cfg.site.uplink is None  # the running state is what it says

        assert not run.done()  # still running on the old configuration
    finally:
        svc.agent.stop()
        await asyncio.wait_for(run, 10)
        svc.close()
    assert run.result() == 0
