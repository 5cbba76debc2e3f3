#!/usr/bin/env bash
# Install, update, roll back or remove edge-agent as a systemd service (Raspberry Pi OS / Debian
# bookworm, Python 3.11). Run from a checkout of the project:
#
#   sudo deploy/install.sh                  install or update, then enable and (re)start the service
#   sudo deploy/install.sh --no-start       install or update; create the user, do not enable/start
#   sudo deploy/install.sh --rollback       switch back to the previous release and restart
#   sudo deploy/install.sh --uninstall      remove the unit and the code; keep config and state
#   deploy/install.sh --root DIR            stage into DIR (packaging, tests): no systemctl, no users
#
# Options: --source DIR (default: this checkout), --python PY (default: python3),
#          --pip-args "ARGS" (extra arguments for every pip install, e.g. "--no-index --find-links W")
#
# Layout (under --root, default /):
#   /opt/edge-agent/releases/<id>/venv     one virtualenv per release: the pinned dependencies from
#                                          deploy/requirements.lock, then the project (--no-deps)
#   /opt/edge-agent/current -> releases/<id>,  previous -> releases/<id>  (switched atomically)
#   /opt/edge-agent/venv -> current/venv   the path the unit runs
#   /etc/systemd/system/edge-agent.service, /etc/sysusers.d/edge-agent.conf
#   /etc/edge-agent/{site,policy}.yaml     copied ONLY when absent: staff edits are never overwritten
#   /var/lib/edge-agent                    state (created by systemd's StateDirectory=), never touched
#
# Idempotent: a release id is a hash of the source, the lock file and the interpreter, so running it
# twice with the same source rebuilds nothing and changes nothing.
set -euo pipefail

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=""
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
PYTHON=python3
PIP_ARGS=""
MODE=install
START=1
KEEP_RELEASES=3

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --source) [ $# -ge 2 ] || die "--source needs a directory"; SOURCE=$2; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --pip-args) [ $# -ge 2 ] || die "--pip-args needs a value"; PIP_ARGS=$2; shift 2 ;;
        --pip-args=*) PIP_ARGS=${1#*=}; shift ;;
        --no-start) START=0; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        --rollback) MODE=rollback; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != "/" ] || ROOT=""
fi
SOURCE=$(cd "$SOURCE" && pwd) || die "source directory not found"

PREFIX_ABS=/opt/edge-agent            # the path as the running system sees it
PREFIX=$ROOT$PREFIX_ABS
UNIT_DIR=$ROOT/etc/systemd/system
SYSUSERS_DIR=$ROOT/etc/sysusers.d
CONF_DIR=$ROOT/etc/edge-agent
STATE_DIR=$ROOT/var/lib/edge-agent
UNIT=edge-agent.service

# systemctl only for a real install on a machine booted with systemd (not in --root, not in a container).
manage_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root (sudo $0 $*), or use --root DIR to stage"
fi

# --- uninstall -----------------------------------------------------------------------------------
if [ "$MODE" = uninstall ]; then
    if manage_systemd; then
        systemctl disable --now "$UNIT" 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/$UNIT" "$SYSUSERS_DIR/edge-agent.conf"
    rm -rf "$PREFIX"
    if manage_systemd; then
        systemctl daemon-reload
        systemctl reset-failed "$UNIT" 2>/dev/null || true
    fi
    say "removed $UNIT_DIR/$UNIT and $PREFIX"
    say "kept the configuration in $CONF_DIR and the state (outbox, audit chain, ledger) in $STATE_DIR"
    say "kept the system user edge-agent (it owns $STATE_DIR); remove both by hand if they must go"
    if [ -d "$UNIT_DIR/$UNIT.d" ]; then
        say "kept the drop-ins in $UNIT_DIR/$UNIT.d (site changes)"
    fi
    exit 0
fi

# --- rollback ------------------------------------------------------------------------------------
if [ "$MODE" = rollback ]; then
    [ -L "$PREFIX/previous" ] || die "no previous release to roll back to in $PREFIX"
    cur=$(readlink "$PREFIX/current")
    prev=$(readlink "$PREFIX/previous")
    [ -x "$PREFIX/$prev/venv/bin/edge-agent" ] || die "previous release $PREFIX/$prev is incomplete"
    ln -sfn "$prev" "$PREFIX/current.tmp" && mv -Tf "$PREFIX/current.tmp" "$PREFIX/current"
    ln -sfn "$cur" "$PREFIX/previous.tmp" && mv -Tf "$PREFIX/previous.tmp" "$PREFIX/previous"
    say "current release is now ${prev#releases/} (was ${cur#releases/})"
    if manage_systemd && systemctl is-active --quiet "$UNIT"; then
        systemctl restart "$UNIT"
        say "restarted $UNIT"
    fi
    exit 0
fi

# --- install / update ----------------------------------------------------------------------------
[ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is not an edge-agent checkout (no pyproject.toml)"
LOCK=$SOURCE/deploy/requirements.lock
[ -f "$LOCK" ] || die "missing $LOCK"
for f in deploy/systemd/edge-agent.service deploy/systemd/edge-agent.sysusers; do
    [ -f "$SOURCE/$f" ] || die "missing $SOURCE/$f"
done

command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); edge-agent needs Python >= 3.11"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON cannot create virtualenvs: apt-get install python3-venv"
PY_ID=$("$PYTHON" -c 'import sys; print(sys.executable, sys.version)')

# Stage a clean copy of the source: pip builds in-tree, and the checkout must stay untouched.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edge-agent-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/src
mkdir -p "$STAGE"
tar -C "$SOURCE" \
    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
    --exclude=.hypothesis --exclude='*.pyc' -cf - . | tar -C "$STAGE" -xf - --no-same-owner

RELEASE_ID=$(
    {
        printf '%s\n' "$PY_ID"
        (cd "$STAGE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-12
)
REL=releases/$RELEASE_ID
RELDIR=$PREFIX/$REL
mkdir -p "$PREFIX/releases"

if [ -f "$RELDIR/.complete" ]; then
    say "release $RELEASE_ID is already built ($RELDIR)"
else
    # Built under its final path (the scripts' shebangs name it); usable only once .complete exists.
    rm -rf "$RELDIR"
    say "building release $RELEASE_ID in $RELDIR (virtualenv with the pinned dependencies)"
    "$PYTHON" -m venv "$RELDIR/venv"
    # Exactly the pinned set, then the project itself; --no-deps: nothing is resolved on site.
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
    "$RELDIR/venv/bin/python" -m pip install --quiet --require-virtualenv --no-deps $PIP_ARGS \
        -r "$LOCK" "$STAGE"
    # The lock must be complete: a dependency missing from it fails here, not at 3 a.m. on site.
    "$RELDIR/venv/bin/python" -m pip check >/dev/null \
        || { "$RELDIR/venv/bin/python" -m pip check >&2 || true; die "dependency check failed; fix deploy/requirements.lock"; }
    "$RELDIR/venv/bin/python" -c 'import edge_agent, drivers, policies, sim' \
        || die "the installed package does not import"
    if [ -n "$ROOT" ]; then
        # Staged into a root: make the scripts name the path they will have on the target system.
        grep -rlI --null -F "$PREFIX/" "$RELDIR/venv/bin" | xargs -0 -r sed -i "s#$PREFIX/#$PREFIX_ABS/#g"
    fi
    mkdir -p "$RELDIR/config" "$RELDIR/docs"
    if [ -f "$STAGE/docs/deploying.md" ]; then
        install -m 0644 "$STAGE/docs/deploying.md" "$RELDIR/docs/"
    fi
    for f in site.yaml policy.yaml; do
        if [ -f "$STAGE/config/$f" ]; then install -m 0644 "$STAGE/config/$f" "$RELDIR/config/$f"; fi
    done
    {
        echo "release=$RELEASE_ID"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "python=$PY_ID"
        echo "source=$SOURCE"
        git -C "$SOURCE" rev-parse HEAD 2>/dev/null | sed 's/^/commit=/' || true
    } >"$RELDIR/release.txt"
    touch "$RELDIR/.complete"
fi

# Switch current/previous atomically (rename over the symlink).
old=""
[ -L "$PREFIX/current" ] && old=$(readlink "$PREFIX/current")
CHANGED=0
if [ "$old" != "$REL" ]; then
    CHANGED=1
    if [ -n "$old" ] && [ -d "$PREFIX/$old" ]; then
        ln -sfn "$old" "$PREFIX/previous.tmp" && mv -Tf "$PREFIX/previous.tmp" "$PREFIX/previous"
    fi
    ln -sfn "$REL" "$PREFIX/current.tmp" && mv -Tf "$PREFIX/current.tmp" "$PREFIX/current"
    say "current release: $RELEASE_ID${old:+ (previous: ${old#releases/})}"
fi
if [ ! -L "$PREFIX/venv" ]; then
    rm -rf "$PREFIX/venv"
    ln -s current/venv "$PREFIX/venv"
fi

# Keep the newest releases; never the current or previous one.
keep_cur=$(readlink "$PREFIX/current" || true)
keep_prev=$(readlink "$PREFIX/previous" 2>/dev/null || true)
n=0
while IFS= read -r d; do
    n=$((n + 1))
    r=releases/${d##*/}
    if [ "$n" -gt "$KEEP_RELEASES" ] && [ "$r" != "$keep_cur" ] && [ "$r" != "$keep_prev" ]; then
        rm -rf "$d"
        say "removed old release ${d##*/}"
    fi
done < <(find "$PREFIX/releases" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)

# Unit and sysusers file: replaced when they changed (they are ours; site changes go in drop-ins).
install_file() {  # src dst mode -> sets UNIT_CHANGED
    if ! cmp -s "$1" "$2" 2>/dev/null; then
        install -D -m "$3" "$1" "$2"
        say "installed $2"
        UNIT_CHANGED=1
    fi
}
UNIT_CHANGED=0
install_file "$SOURCE/deploy/systemd/edge-agent.service" "$UNIT_DIR/$UNIT" 0644
install_file "$SOURCE/deploy/systemd/edge-agent.sysusers" "$SYSUSERS_DIR/edge-agent.conf" 0644

# Configuration: only where none exists. Staff edit these files; an update never overwrites them.
mkdir -p "$CONF_DIR"
for f in site.yaml policy.yaml; do
    if [ -e "$CONF_DIR/$f" ]; then
        say "kept $CONF_DIR/$f (existing file, never overwritten); the shipped example is $PREFIX_ABS/current/config/$f"
    elif [ -f "$STAGE/config/$f" ]; then
        install -m 0644 "$STAGE/config/$f" "$CONF_DIR/$f"
        say "installed $CONF_DIR/$f (example: edit it for this site, then: edge-agent check -c $CONF_DIR/site.yaml)"
    else
        say "warning: the source has no config/$f; write $CONF_DIR/$f before starting the service" >&2
    fi
done

if [ -n "$ROOT" ]; then
    say "staged into $ROOT (no users created, systemd not touched)"
    exit 0
fi

if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers "$SYSUSERS_DIR/edge-agent.conf"
else
    die "systemd-sysusers not found: cannot create the edge-agent user"
fi
if ! manage_systemd; then
    say "systemd is not running here: not enabling or starting $UNIT"
    exit 0
fi
systemctl daemon-reload
if [ "$START" -eq 0 ]; then
    say "--no-start: $UNIT installed but not enabled or started (systemctl enable --now $UNIT)"
    exit 0
fi
if systemctl is-active --quiet "$UNIT" && { [ "$CHANGED" -eq 1 ] || [ "$UNIT_CHANGED" -eq 1 ]; }; then
    systemctl enable "$UNIT"
    systemctl restart "$UNIT"
    say "restarted $UNIT on the new release"
else
    systemctl enable --now "$UNIT"
fi
systemctl --no-pager --lines=0 status "$UNIT" || true
say "logs: journalctl -u $UNIT -f    status: edge-agent status"
