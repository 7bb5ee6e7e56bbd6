"""Health items for `drorch check`: each says ok, warn, fail or skip, and for
anything not ok, what to fix.  Repositories, hosts, free space and PostgreSQL
here; backup age, restore verification and restore time in health_backups.py."""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass

from drorch.errors import DrorchError, NotFoundError
from drorch.repo import layout
from drorch.repo.repository import Repository
from drorch.units import fs_space


@dataclass
class Item:
    name: str
    status: str  # ok | warn | fail | skip
    message: str
    hint: str | None = None


def repository_items(name: str, storage, open_repo, encrypted_in_policy: bool) -> list[Item]:
    """The repository answers, holds a drorch config and takes a write (a probe
    object, removed again); then whether the policy's passphrase opens its key."""
    label = f"repository {name}"
    try:
        config = storage.get(layout.CONFIG)
    except NotFoundError:
        if storage.is_empty():
            return [Item(label, "warn", f"no repository at {storage.location} yet",
                         "the first backup (or `drorch repo init`) creates it")]
        return [Item(label, "fail", f"{storage.location} holds other files and no drorch repository",
                     "point the policy at a drorch repository or an empty location")]
    except DrorchError as exc:
        return [Item(label, "fail", f"{storage.location} cannot be read: {exc.message}", exc.hint)]
    key = f"probe/{uuid.uuid4().hex}"
    try:
        storage.put(key, b"drorch check")
        storage.delete(key)
    except DrorchError as exc:
        return [Item(label, "fail", f"{storage.location} is readable but not writable: {exc.message}", exc.hint)]
    try:
        encrypted = bool(json.loads(config).get("encryption"))
    except (ValueError, AttributeError):
        encrypted = False
    try:
        repo: Repository = open_repo()
    except DrorchError as exc:
        if encrypted or encrypted_in_policy:
            return [Item(label, "ok", f"{storage.location} is reachable and writable"),
                    Item(f"{label}: encryption", "fail", exc.message, exc.hint)]
        return [Item(label, "fail", exc.message, exc.hint)]
    items = [Item(label, "ok", f"{repo.location} (format {repo.config['version']}, id {repo.id}): reachable "
                               "and writable")]
    if repo.encrypted:
        items.append(Item(f"{label}: encryption", "ok", "the policy's passphrase opens the repository's key"))
    else:
        items.append(Item(f"{label}: encryption", "skip", "not encrypted"))
    return items


def host_items(hosts: dict[str, list[str]], open_host) -> list[Item]:
    """hosts: host name -> the sources that use it.  An SSH host is reached (its host
    key checked against known_hosts, our key accepted, `become` working)."""
    items = []
    for name, users in sorted(hosts.items()):
        used = f"used by {', '.join(users)}"
        if name == "local":
            items.append(Item("host local", "ok", f"this machine ({socket.gethostname()}), {used}"))
            continue
        try:  # (the connection stays open for the other items; the command closes it at its end)
            host = open_host(name)
            host.connect()
            where = getattr(getattr(host, "config", None), "where", name)
            items.append(Item(f"host {name}", "ok", f"reached {where} over SSH, host key verified, {used}"))
        except DrorchError as exc:
            items.append(Item(f"host {name}", "fail", f"{exc.message} ({used})", exc.hint))
    return items


def free_space_item(what: str, path: str, min_free_percent: float) -> Item:
    """Warn when the file system holding path (or its nearest existing parent) runs low."""
    try:
        total, free = fs_space(path)
    except OSError as exc:
        return Item(f"{what}: free space", "warn", f"cannot look at {path}: {exc.strerror}")
    percent = 100.0 * free / total if total else 100.0
    message = f"{_gib(free)} free of {_gib(total)} ({percent:.0f}%) on the file system of {path}"
    if percent < min_free_percent:
        return Item(f"{what}: free space", "warn", message + f", below {min_free_percent:g}%",
                    "free space there (expire old backups, clean up) or grow the file system before it fills")
    return Item(f"{what}: free space", "ok", message)


def _gib(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.1f} GiB"


def pg_connection_item(source: str, params) -> Item:
    """A logical source: the server answers (pg_dump connects the same way)."""
    from drorch.sources.pg_conn import connect, one

    try:
        with connect(params) as conn:
            version = one(conn, "SHOW server_version")
    except DrorchError as exc:
        return Item(f"source {source}: connection", "fail", exc.message, exc.hint)
    return Item(f"source {source}: connection", "ok", f"{params.describe()} (PostgreSQL {version})")


def postgres_items(source: str, params, archive_timeout: float, repo_open, probe: bool) -> list[Item]:
    """Connection and privileges, archive_command, archiving progress, and with
    probe an end-to-end check: switch WAL and wait for the segment in the repository."""
    import psycopg

    from drorch.engine import wal
    from drorch.sources.pg_conn import connect, one

    prefix = f"source {source}"
    try:
        conn = connect(params)
    except DrorchError as exc:
        return [Item(f"{prefix}: connection", "fail", exc.message, exc.hint)]
    items = []
    with conn:
        superuser = one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        allowed = superuser or one(conn, "SELECT has_function_privilege('pg_backup_start(text, boolean)', "
                                         "'EXECUTE')")
        items.append(Item(f"{prefix}: connection", "ok" if allowed else "fail",
                          f"{params.describe()} ({'superuser' if superuser else 'role ' + params.user})"
                          + ("" if allowed else ": may not run pg_backup_start"),
                          None if allowed else f"GRANT EXECUTE ON FUNCTION pg_backup_start, pg_backup_stop TO "
                                               f"{params.user}; GRANT pg_checkpoint TO {params.user}"))
        mode, command = one(conn, "SHOW archive_mode"), one(conn, "SHOW archive_command")
        ours = "wal-push" in command and f"--source {source}" in command
        items.append(Item(f"{prefix}: archive_command", "ok" if mode in ("on", "always") and ours else "fail",
                          f"archive_mode={mode}, archive_command={command!r}",
                          None if ours and mode != "off" else
                          f"set archive_mode = on and archive_command = 'drorch wal-push --policy ... --source "
                          f"{source} %p', then restart"))
        archived_wal, archived_at, failed_wal, failed_at = conn.execute(
            "SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time "
            "FROM pg_stat_archiver").fetchone()
        if failed_at and (archived_at is None or failed_at > archived_at):
            items.append(Item(f"{prefix}: archiving", "fail",
                              f"archive_command is failing: {failed_wal} failed at {failed_at:%Y-%m-%d %H:%M:%S%z}"
                              + (f", last success {archived_wal}" if archived_wal else ", never succeeded"),
                              "read the server log for archive_command's error and fix it: WAL piles up in "
                              "pg_wal and backups cannot complete"))
        else:
            items.append(Item(f"{prefix}: archiving", "ok",
                              f"last archived {archived_wal} at {archived_at:%Y-%m-%d %H:%M:%S%z}" if archived_wal
                              else "nothing archived yet"))
        if probe:
            items.append(_probe(conn, source, archive_timeout, repo_open, prefix, wal, psycopg))
    return items


def _probe(conn, source, timeout, repo_open, prefix, wal, psycopg) -> Item:
    try:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    except psycopg.Error as exc:
        return Item(f"{prefix}: archive probe", "fail", f"cannot switch WAL: {str(exc).strip()}")
    started = time.monotonic()
    try:
        wal.wait_for(repo_open(), source, [segment], timeout)
    except DrorchError as exc:
        return Item(f"{prefix}: archive probe", "fail", exc.message, exc.hint)
    return Item(f"{prefix}: archive probe", "ok",
                f"{segment} reached the repository in {time.monotonic() - started:.1f}s")


def mariadb_items(source, repo_open) -> list[Item]:
    """Connection, binary logging, and the binlog archive: closed binlogs not yet
    archived (lag) and holes in the archived sequence (gaps)."""
    from drorch.engine import binlog

    prefix = f"source {source.name}"
    try:
        version = source.sql("SELECT VERSION()").strip()
        log_bin = source.sql("SELECT @@log_bin").strip() == "1"
        closed = source.closed_binlogs() if log_bin else []
    except DrorchError as exc:
        return [Item(f"{prefix}: connection", "fail", exc.message, exc.hint)]
    finally:
        source.cleanup()
    items = [Item(f"{prefix}: connection", "ok", f"MariaDB {version} on {source.host.name}")]
    if not log_bin:
        return items + [Item(f"{prefix}: binlog archive", "warn", "binary logging is off: no point-in-time restore",
                             "set log_bin (and a server_id) and restart")]
    try:
        archived = binlog.archived(repo_open(), source.name)
    except DrorchError as exc:
        return items + [Item(f"{prefix}: binlog archive", "fail", exc.message, exc.hint)]
    lagging = [p.rsplit("/", 1)[-1] for p in closed if p.rsplit("/", 1)[-1] not in archived]
    holes = binlog.gaps(list(archived))
    if holes:
        items.append(Item(f"{prefix}: binlog archive", "fail", f"gap in the archive: {', '.join(holes[:5])} missing",
                          "point-in-time restore cannot cross a gap: take a new full backup"))
    elif lagging:
        items.append(Item(f"{prefix}: binlog archive", "warn", f"{len(lagging)} closed binlog(s) not archived yet "
                          f"({', '.join(lagging[:3])})", "run `drorch binlog-archive` (the daemon does after backups)"))
    else:
        items.append(Item(f"{prefix}: binlog archive", "ok", f"{len(archived)} binlog(s) archived, none behind"))
    return items
