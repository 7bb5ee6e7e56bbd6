"""Making a restored PostgreSQL data directory start and recover by itself:
refuse a live target, then write restore_command, the recovery target and
the signal file, and keep a restored copy from archiving into production's
archive."""

from __future__ import annotations

import posixpath
import re
import shlex
import stat

from drorch.errors import RestoreError
from drorch.fsmeta import Entry
from drorch.hosts.base import Host
from drorch.sources.base import RestoreOptions

TARGET_KEYS = ("time", "lsn", "xid", "name", "immediate")
EXTERNAL = "drorch.external-config"  # where config files from outside the data directory are stored
STANDARD_NAMES = {"config_file": "postgresql.conf", "hba_file": "pg_hba.conf", "ident_file": "pg_ident.conf"}
# Settings of an outside postgresql.conf that would point a restored copy at production's files.
NEUTRALISE = re.compile(r"^\s*(data_directory|hba_file|ident_file|external_pid_file|include_dir|include|"
                        r"include_if_exists)\s*=", re.M)


def tablespace_links(host: Host, options: RestoreOptions, facts: dict, in_place: bool) -> dict[str, str]:
    """pg_tblspc/<oid> -> where that tablespace's files go.  Mapped with
    --tablespace-map OID=DIR, or its original location when restoring in place;
    otherwise not linked: restored as a directory inside the target (an in-place
    tablespace), so a restored copy never writes into production's locations."""
    known = facts.get("tablespaces") or {}
    wanted: dict[str, str] = {oid: path for oid, path in known.items()} if in_place else {}
    for item in options.source_options.get("tablespace_map") or ():
        oid, _, path = item.partition("=")
        if oid not in known:
            raise RestoreError(f"--tablespace-map {item}: the backup has no tablespace {oid} "
                               f"(it has: {', '.join(sorted(known)) or 'none'})", exit_code=2)
        if not posixpath.isabs(path):
            raise RestoreError(f"--tablespace-map {item}: {path} must be an absolute path", exit_code=2)
        wanted[oid] = path
    links = {}
    for oid, path in wanted.items():
        names = host.listdir(path)
        if names and not (options.force or options.delta) and not in_place:
            raise RestoreError(f"tablespace {oid} target {path} is not empty; nothing was written",
                               "choose an empty directory, or pass --delta / --force")
        links[f"pg_tblspc/{oid}"] = path
    return links


def place_external_config(host: Host, target: str, facts: dict) -> None:
    """Config files that lived outside the data directory (Debian: /etc/postgresql)
    become the restored copy's own, with settings that point elsewhere commented
    out, so `pg_ctl -D TARGET start` works and touches nothing of production."""
    stored = facts.get("external_config") or {}
    for setting, info in stored.items():
        source = posixpath.join(target, info["stored_as"])
        dest = posixpath.join(target, STANDARD_NAMES[setting])
        if host.lstat(source) is None:
            continue
        data = host.read(source)
        if setting == "config_file":
            data = NEUTRALISE.sub(lambda m: "# drorch restore: " + m.group(0), data.decode()).encode()
        if host.lstat(dest) is None:
            _write(host, dest, data, like=target)
    host.remove(posixpath.join(target, EXTERNAL))


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
    if pitr.get("sandbox"):  # a restore verification: to consistency, promote, nothing shared with production
        pitr = {"immediate": True, "action": "promote", "archive_mode": "off", "sandbox": True,
                "archive_dir": pitr.get("archive_dir")}
    command = (f"{settings.drorch_command} wal-get --policy {shlex.quote(str(settings.policy_path))} "
               f"--source {shlex.quote(source)} %f %p")
    if pitr.get("archive_dir"):  # a verify host: the WAL was put into the sandbox (engine/verify_restore.py)
        command = f"cp {shlex.quote(pitr['archive_dir'])}/%f %p"
    if settings.spool and not pitr.get("sandbox"):  # production's spool is not the sandbox's
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
    if any(f"pg_tblspc/{oid}" not in options.links for oid in facts.get("tablespaces") or {}):
        out["allow_in_place_tablespaces"] = "on"  # tablespaces restored as directories inside the target
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
    for rel, mode in (("", 0o700), ("postgresql.auto.conf", 0o600), ("recovery.signal", 0o600),
                      ("standby.signal", 0o600), ("pg_wal", 0o700), ("pg_wal/archive_status", 0o700),
                      *((name, 0o600) for name in STANDARD_NAMES.values())):
        path = posixpath.join(target, rel) if rel else target
        now = host.lstat(path)
        if now is None:
            continue
        # A new Entry each time: a remote host queues set_meta calls until flush().
        host.set_meta(path, Entry(path=rel or ".", type="dir" if stat.S_ISDIR(now.st_mode) else "file",
                                  mode=mode, uid=st.st_uid, gid=st.st_gid, user=os_user, group=None,
                                  mtime_ns=now.st_mtime_ns))
