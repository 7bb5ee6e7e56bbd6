"""Making a restored PostgreSQL data directory start and recover by itself:
refuse a live target, then write restore_command, the recovery target and
the signal file, and keep a restored copy from archiving into production's
archive."""

from __future__ import annotations

import posixpath
import shlex
import stat

from drorch.errors import RestoreError
from drorch.fsmeta import Entry
from drorch.hosts.base import Host
from drorch.sources.base import RestoreOptions

TARGET_KEYS = ("time", "lsn", "xid", "name", "immediate")


def prepare_target(host: Host, target: str) -> None:
    """Refuse a data directory with a running postmaster, whatever the flags."""
    pidfile = posixpath.join(target, "postmaster.pid")
    if host.lstat(pidfile) is None:
        return
    try:
        pid = int(host.read(pidfile).split()[0])
    except (ValueError, IndexError, OSError):
        return
    if host.lstat(f"/proc/{pid}") is not None:
        raise RestoreError(f"a PostgreSQL server (pid {pid}) is running on {target}; nothing was written",
                           "stop it first (pg_ctl stop); drorch never restores over a running cluster, "
                           "even with --force or --delta")


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def recovery_settings(options: RestoreOptions, facts: dict, source: str, settings) -> dict[str, str]:
    """The postgresql.auto.conf lines for this restore."""
    pitr = options.source_options
    command = (f"{settings.drorch_command} wal-get --policy {shlex.quote(str(settings.policy_path))} "
               f"--source {shlex.quote(source)} %f %p")
    if settings.spool:
        command = command.replace(" wal-get ", f" wal-get --async --spool {shlex.quote(settings.spool)} "
                                               f"--prefetch {settings.prefetch} ")
    out = {"restore_command": _quote(command)}
    if pitr.get("time"):
        out["recovery_target_time"] = _quote(pitr["time"])
    elif pitr.get("lsn"):
        out["recovery_target_lsn"] = _quote(pitr["lsn"])
    elif pitr.get("xid"):
        out["recovery_target_xid"] = _quote(pitr["xid"])
    elif pitr.get("name"):
        out["recovery_target_name"] = _quote(pitr["name"])
    elif pitr.get("immediate"):
        out["recovery_target"] = _quote("immediate")
    if any(pitr.get(k) for k in TARGET_KEYS):
        out["recovery_target_action"] = _quote(pitr.get("action") or "pause")
        if pitr.get("exclusive"):
            out["recovery_target_inclusive"] = "off"
    if pitr.get("timeline"):
        out["recovery_target_timeline"] = _quote(pitr["timeline"])
    archive_mode = pitr.get("archive_mode") or ("preserve" if pitr.get("standby") else "off")
    if archive_mode == "off":
        out["archive_mode"] = "off"  # a restored copy must never push into production's archive
    if pitr.get("standby") and pitr.get("primary_conninfo"):
        out["primary_conninfo"] = _quote(pitr["primary_conninfo"])
    return out


def write_recovery(host: Host, options: RestoreOptions, facts: dict, source: str, settings) -> None:
    target = options.target
    lines = [f"# added by drorch: restore of {source} (backup from {facts.get('start_lsn')} to "
             f"{facts.get('stop_lsn')})"]
    lines += [f"{key} = {value}" for key, value in recovery_settings(options, facts, source, settings).items()]
    auto = posixpath.join(target, "postgresql.auto.conf")
    existing = host.read(auto) if host.lstat(auto) is not None else b""
    _write(host, auto, existing.rstrip(b"\n") + b"\n" + "\n".join(lines).encode() + b"\n", like=target)
    for name in ("recovery.signal", "standby.signal"):
        host.remove(posixpath.join(target, name))
    signal = "standby.signal" if options.source_options.get("standby") else "recovery.signal"
    _write(host, posixpath.join(target, signal), b"", like=target)
    host.makedirs(posixpath.join(target, "pg_wal", "archive_status"))
    _own_like_data(host, target, settings.os_user)


def _write(host: Host, path: str, data: bytes, like: str) -> None:
    handle = host.open_write(path, len(data))
    try:
        if data:
            handle.pwrite(data, 0)
    finally:
        handle.close()


def _own_like_data(host: Host, target: str, os_user: str) -> None:
    """The data directory is 0700 and owned by the server's OS user; so are the
    files drorch wrote into it."""
    st = host.lstat(posixpath.join(target, "PG_VERSION"))
    if st is None:
        return
    owner = Entry(path="x", type="file", uid=st.st_uid, gid=st.st_gid, user=os_user, group=None,
                  mtime_ns=st.st_mtime_ns)
    for rel, mode in (("", 0o700), ("postgresql.auto.conf", 0o600), ("recovery.signal", 0o600),
                      ("standby.signal", 0o600), ("pg_wal", 0o700), ("pg_wal/archive_status", 0o700)):
        path = posixpath.join(target, rel) if rel else target
        now = host.lstat(path)
        if now is None:
            continue
        owner.mode, owner.mtime_ns = mode, now.st_mtime_ns
        owner.type = "dir" if stat.S_ISDIR(now.st_mode) else "file"
        host.set_meta(path, owner)
