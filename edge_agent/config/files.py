"""Files site.yaml names that the agent opens only at run time: do they exist, can the service read them?

The uplink reads its credentials and TLS files at every connect, and the service its audit key at start;
a missing or unreadable one showed only as a connect failure (or a FileNotFoundError without the path).
``edge-agent check`` reports each as ``site.yaml:LINE:COL: yaml.path: message``, naming the file. With
``as_user`` (``check --as-service``, run as root) readability is judged for that user from the file's mode
and owner and the search permission of every folder above it, as the service will meet them; and each
serial port the site names (present on this machine) must be readable and writable by that user with the
groups the unit's drop-ins add (SupplementaryGroups=) and be named by their DeviceAllow=, or the service
cannot open it (docs/deploying.md, serial devices).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from edge_agent.config.load import ConfigIssue, LoadedConfig
from edge_agent.config.yamlmarks import YamlDoc, format_path, load_yaml

__all__ = ["DROPIN_DIR", "SERVICE_USER", "check_files", "referenced_files"]

SERVICE_USER = "edge-agent"  # deploy/systemd/edge-agent.service: User=
DROPIN_DIR = Path("/etc/systemd/system/edge-agent.service.d")  # `systemctl edit edge-agent` writes here


def referenced_files(cfg: LoadedConfig) -> Iterator[tuple[tuple[str, ...], str]]:
    """(YAML path, the path as written) of every file site.yaml names for the run time to read."""
    up = cfg.site.uplink
    if up is not None:
        if up.credentials_file:
            yield ("uplink", "credentials_file"), up.credentials_file
        if up.tls is not None:
            yield ("uplink", "tls", "ca_file"), up.tls.ca_file
            if up.tls.cert_file:
                yield ("uplink", "tls", "cert_file"), up.tls.cert_file
            if up.tls.key_file:
                yield ("uplink", "tls", "key_file"), up.tls.key_file
        if up.platform is not None:
            yield ("uplink", "platform", "key_file"), up.platform.key_file
    if cfg.site.storage.audit_key_file:
        yield ("storage", "audit_key_file"), cfg.site.storage.audit_key_file


def _readable_by(path: Path, user: pwd.struct_passwd) -> str | None:
    """Why ``user`` cannot read ``path`` (None when it can), from modes and owners alone."""
    if user.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))

    def allowed(st: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if st.st_uid == user.pw_uid:
            return bool(st.st_mode & bits[0])
        if st.st_gid in groups:
            return bool(st.st_mode & bits[1])
        return bool(st.st_mode & bits[2])

    for folder in reversed(path.absolute().parents):
        if not allowed(folder.stat(), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
            return f"user {user.pw_name!r} cannot enter the folder {folder}"
    if not allowed(path.stat(), (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)):
        return f"user {user.pw_name!r} cannot read it (mode {stat.filemode(path.stat().st_mode)})"
    return None


def _problem(path: Path, user: pwd.struct_passwd | None) -> str | None:
    try:
        if not path.exists():
            return "does not exist"
        if not path.is_file():
            return "is not a file"
        if user is not None:
            return _readable_by(path, user)
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def check_files(
    cfg: LoadedConfig, *, as_user: str | None = None, file: str | None = None, dropin_dir: Path = DROPIN_DIR
) -> list[ConfigIssue]:
    """An error for every referenced file that is missing or unreadable (by ``as_user`` when given).
    ``file`` is site.yaml's name in messages (default: its absolute path).

    Raises KeyError when ``as_user`` is not a user of this system.
    """
    user = pwd.getpwnam(as_user) if as_user is not None else None
    found = list(referenced_files(cfg))
    if not found and user is None:
        return []
    name = file or str(cfg.site_path)
    doc = load_yaml(cfg.site_path, file=name)
    issues = [] if user is None else _serial_port_issues(doc, name, user, dropin_dir)
    for yaml_path, written in found:
        resolved = cfg.resolve(written)
        problem = _problem(resolved, user)
        if problem is not None:
            mark = doc.mark(yaml_path)
            shown = written if str(resolved) == written else f"{written} ({resolved})"
            issues.append(ConfigIssue(name, mark.line, mark.col, ".".join(yaml_path),
                                      f"{shown} {problem}"))  # fmt: skip
    return issues


def _unit_devices(dropin_dir: Path) -> tuple[set[str], set[str]]:
    """DeviceAllow= paths and SupplementaryGroups= names of the unit's drop-ins."""
    allow: set[str] = set()
    groups: set[str] = set()
    for conf in sorted(dropin_dir.glob("*.conf")) if dropin_dir.is_dir() else []:
        for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.strip().partition("=")
            if key == "DeviceAllow" and value.split():
                allow.add(value.split()[0])
            elif key == "SupplementaryGroups":
                groups.update(value.split())
    return allow, groups


def _serial_port_issues(
    doc: YamlDoc, name: str, user: pwd.struct_passwd, dropin_dir: Path
) -> list[ConfigIssue]:
    """A problem per serial port (a device's `port:` as a path, not a TCP port number), at its first
    device."""
    allow, groups = _unit_devices(dropin_dir)
    devices = doc.data.get("devices") if isinstance(doc.data, dict) else None
    seen: set[str] = set()
    issues = []
    for i, entry in enumerate(devices if isinstance(devices, list) else []):
        port = entry.get("port") if isinstance(entry, dict) else None
        if not isinstance(port, str) or port in seen or not os.path.exists(port):
            continue  # a missing port: load_config warns already
        seen.add(port)
        problem = _port_access(port, user, groups)
        real = os.path.realpath(port)
        if problem is None and not any(a == port or os.path.realpath(a) == real for a in allow):
            problem = (
                f"{port}: no `DeviceAllow={port} rw` in the unit's drop-ins ({dropin_dir}): the service "
                "cannot open it (docs/deploying.md, serial devices)"
            )
        if problem is not None:
            path = ("devices", i, "port")
            mark = doc.mark(path)
            issues.append(ConfigIssue(name, mark.line, mark.col, format_path(path), f"serial port {problem}"))
    return issues


def _port_access(port: str, user: pwd.struct_passwd, unit_groups: set[str]) -> str | None:
    """Why ``user``, with the groups the unit adds, cannot read and write ``port`` (None when it can)."""
    if user.pw_uid == 0:
        return None
    gids = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for group in unit_groups:
        try:
            gids.add(grp.getgrnam(group).gr_gid)
        except KeyError:
            continue
    st = os.stat(port)
    if st.st_uid == user.pw_uid:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif st.st_gid in gids:
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    if st.st_mode & bits == bits:
        return None
    try:
        group_name = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group_name = str(st.st_gid)
    mode = stat.filemode(st.st_mode)
    why = f"{port}: user {user.pw_name!r} cannot read and write it (mode {mode}, group {group_name})"
    if st.st_mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP:
        return (
            f"{why}: give the service that group in the unit's serial drop-in "
            f"(SupplementaryGroups={group_name}, docs/deploying.md)"
        )
    return f'{why}: its group cannot either; a udev rule can give it one (GROUP="dialout", MODE="0660")'
