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
