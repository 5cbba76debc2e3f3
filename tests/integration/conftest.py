"""A real mosquitto per test: started on a free 127.0.0.1 port from a temp config, killed by its PID.

Tests using it skip with a reason when the mosquitto binary is absent (`make system-deps` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["Broker", "TlsFiles", "free_port", "mosquitto_binary"]


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for cand in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass
class Broker:
    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: list[str] = field(default_factory=list)  # more mosquitto.conf lines (acl_file, max_packet_size)

    def _conf(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        if any(line.startswith("password_file") for line in self.extra):
            lines[1] = "allow_anonymous false"
        lines += self.extra
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to `mosquitto`, which cannot read the temp dir
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
            ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "broker already running"
        self.starts += 1
        log = open(self.workdir / f"mosquitto-{self.starts}.log", "wb")  # noqa: SIM115 - lives with proc
        self.proc = subprocess.Popen([self.binary, "-c", str(self._conf())], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = (self.workdir / f"mosquitto-{self.starts}.log").read_text(errors="replace")
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {out}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its configuration, ACL and password files again."""
        assert self.proc is not None
        self._conf()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(d: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 (SAN) and a client certificate, with the openssl CLI."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn, ext in (("server", "127.0.0.1", True), ("client", "gw-test", False)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        extra = ["-extfile", "san.ext"] if ext else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)  # fmt: skip
    return TlsFiles(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
    )


@pytest.fixture
def mosquitto_bin() -> str:
    b = mosquitto_binary()
    if b is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto, or `make system-deps`)")
    return b


@pytest.fixture
def broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[Broker]:
    """A running plain-TCP broker; the test may stop() and start() it again on the same port."""
    b = Broker(binary=mosquitto_bin, workdir=tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop(signal.SIGKILL)


@pytest.fixture
def tls_broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found: cannot make test certificates")
    certs = tmp_path / "certs"
    certs.mkdir()
    b = Broker(binary=mosquitto_bin, workdir=tmp_path, tls=make_tls_files(certs))
    b.start()
    try:
        yield b
    finally:
        b.stop(signal.SIGKILL)
