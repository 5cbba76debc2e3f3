"""`edge-agent check` verifies the files site.yaml names for the run time: credentials, TLS, audit key."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from edge_agent.cli.check import check_main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"


def _site(tmp_path: Path, uplink: str) -> Path:
    for name in ("modbus_site.yaml", "modbus_policy.yaml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    site = tmp_path / "modbus_site.yaml"
    site.write_text(site.read_text(encoding="utf-8") + uplink, encoding="utf-8")
    return site


def _check(site: Path, as_user: str | None = None) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_main(str(site), out=out, err=err, as_user=as_user)
    return code, err.getvalue()


UPLINK = """
uplink:
  host: 127.0.0.1
  credentials_file: secrets/mqtt.cred
  tls:
    ca_file: certs/ca.pem
    cert_file: certs/client.pem
    key_file: certs/client.key
"""


def test_missing_files_are_named_with_their_line(tmp_path: Path) -> None:
    site = _site(tmp_path, UPLINK)
    code, err = _check(site)
    assert code == 2
    lines = [ln for ln in err.splitlines() if "does not exist" in ln]
    assert len(lines) == 4, err
    ca = next(ln for ln in lines if "uplink.tls.ca_file" in ln)
    assert ca.startswith(f"{site}:") and "certs/ca.pem" in ca and str(tmp_path / "certs" / "ca.pem") in ca
    n = site.read_text(encoding="utf-8").splitlines().index("    ca_file: certs/ca.pem") + 1
    assert ca.split(":")[1] == str(n)
    assert "INVALID" in err


def test_present_files_pass_relative_to_site_yaml(tmp_path: Path) -> None:
    site = _site(tmp_path, UPLINK)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "certs").mkdir()
    for f in ("secrets/mqtt.cred", "certs/ca.pem", "certs/client.pem", "certs/client.key"):
        (tmp_path / f).write_text("x\n")
    code, err = _check(site)
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() != 0, reason="judging another user's access needs files owned by root")
def test_as_service_judges_the_service_users_access() -> None:
    user = "nobody"
    try:
        pwd.getpwnam(user)
    except KeyError:
        pytest.skip("no `nobody` user")
    root = Path(tempfile.mkdtemp(prefix="edge-check-"))  # pytest's tmp_path is 0700: nobody could enter it
    try:
        os.chmod(root, 0o755)
        for d in root.parents:
            if not os.stat(d).st_mode & 0o001:
                pytest.skip(f"{d} is not searchable by others")
        site = _site(root, UPLINK)
        (root / "secrets").mkdir()
        (root / "certs").mkdir()
        for f in ("secrets/mqtt.cred", "certs/ca.pem", "certs/client.pem", "certs/client.key"):
            (root / f).write_text("x\n")
            os.chmod(root / f, 0o644)
        os.chmod(root / "certs" / "client.key", 0o600)  # root's own key: the service user cannot read it
        code, err = _check(site, as_user=user)
        assert code == 2
        assert "uplink.tls.key_file" in err and f"user {user!r} cannot read it" in err, err
        assert "ca_file" not in err
        assert _check(site)[0] == 0  # root itself can
        code, err = _check(site, as_user="no-such-user-here")
        assert code == 2 and "no user 'no-such-user-here'" in err
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="judging another user's access needs files owned by root")
def test_as_service_judges_serial_ports_with_the_units_drop_ins(tmp_path: Path) -> None:
    """check --as-service on a gateway: the service user opens the port only with the group the serial
    drop-in adds (SupplementaryGroups=) and only when DeviceAllow= names it (docs/deploying.md)."""
    import grp

    from edge_agent.config.files import check_files
    from edge_agent.config.load import load_config

    try:
        pwd.getpwnam("nobody")
        dialout = grp.getgrnam("dialout").gr_gid
    except KeyError:
        pytest.skip("no `nobody` user or `dialout` group")
    port = tmp_path / "ttyUSB0"  # stands in for the device node: the same mode, owner and group checks
    port.write_bytes(b"")
    os.chown(port, 0, dialout)
    os.chmod(port, 0o660)
    (tmp_path / "policy.yaml").write_text('seasons: {summer: "06-01..09-30", winter: "11-15..03-15"}\n')
    site = tmp_path / "site.yaml"
    meters = "".join(
        f'  - {{protocol: dlt645, id: m{n}, port: {port}, address: "00000000000{n}", '
        f'points: [{{id: e{n}, di: "00010000"}}]}}\n'
        for n in (1, 2)
    )
    site.write_text(
        'gateway_id: gw\nbuilding_id: "370102A001"\nlocation: {lat: 36.65, lon: 117.12}\n'
        f"floor_area_m2: 1000\noccupants: 10\ndevices:\n{meters}"
    )
    cfg = load_config(site)
    dropins = tmp_path / "edge-agent.service.d"
    dropins.mkdir()

    def issues() -> list[str]:
        return [
            f"{i.line}:{i.path}: {i.message}" for i in check_files(cfg, as_user="nobody", dropin_dir=dropins)
        ]

    # No drop-in: nobody is not in dialout.
    (msg,) = issues()
    assert msg.startswith(f"7:devices[0].port: serial port {port}: user 'nobody' cannot read and write it")
    assert "SupplementaryGroups=dialout" in msg  # one issue per port, at its first device
    (dropins / "serial.conf").write_text("[Service]\nSupplementaryGroups=dialout\n")
    (msg,) = issues()
    assert f"no `DeviceAllow={port} rw` in the unit's drop-ins ({dropins})" in msg
    (dropins / "serial.conf").write_text(f"[Service]\nDeviceAllow={port} rw\nSupplementaryGroups=dialout\n")
    assert issues() == []
    os.chmod(port, 0o600)  # only root: no group to give
    (msg,) = issues()
    assert "its group cannot either" in msg
