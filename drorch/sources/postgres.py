"""The `postgres` source, mode `physical`: a base backup with the low-level
API (pg_backup_start / copy / pg_backup_stop on one connection), from the
primary or from a streaming standby, with page checksums verified while
reading.  Restore lays down a data directory that recovers by itself (see
pg_recovery.py); WAL archiving is engine/wal.py.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from dataclasses import dataclass

import psycopg

from drorch.errors import SourceError
from drorch.fsmeta import DIR, FILE, Entry, entry_from_stat
from drorch.hosts.base import Host
from drorch.sources import pg_layout
from drorch.sources.base import RestoreOptions, Sandbox, SourceEnd, Warn, read_hints, read_many_from, start_read_many_from
from drorch.sources.pg_checksum import PAGE, SEGMENT_PAGES, bad_pages
from drorch.sources.pg_conn import PgParams, connect, one, server_facts
from drorch.sources.pg_recovery import (EXTERNAL, place_external_config, prepare_target, tablespace_links,
                                        write_recovery)
from drorch.sources.pg_wal import format_lsn, parse_backup_label, parse_lsn, segment_range

log = logging.getLogger(__name__)
MAX_REPORTED_PAGES = 100


@dataclass
class PgSettings:
    pgdata: str
    primary: PgParams
    standby: PgParams | None = None
    backup_from: str = "primary"
    os_user: str = "postgres"
    drorch_command: str = "drorch"
    policy_path: str = "/etc/drorch/policies"
    archive_timeout: float = 60.0
    spool: str | None = None
    prefetch: int = 8
    bin_dir: str = "/usr/lib/postgresql/15/bin"


class PostgresSource:
    kind = "postgres"
    detect_torn = False  # WAL replay repairs pages that changed while they were read
    restore_rewrites = ("postgresql.auto.conf", EXTERNAL)  # finish_restore changes these

    def __init__(self, name: str, host: Host, settings: PgSettings):
        self.name = name
        self.host = host  # the machine whose data directory is copied
        self.read_unit, batch = read_hints(host)  # what a remote host reads per request
        if batch:
            self.read_batch = batch
        self.settings = settings
        self.pgdata = settings.pgdata.rstrip("/")
        self.conn: psycopg.Connection | None = None
        self.facts: dict = {}
        self.tablespaces: dict[str, str] = {}
        self.start_lsn = 0
        self._page_errors: list[str] = []
        self._errors_lock = threading.Lock()
        self._stopped = False

    # -- backup ------------------------------------------------------------------

    def begin(self, warn: Warn) -> dict:
        standby = self.settings.backup_from == "standby"
        params = self.settings.standby if standby else self.settings.primary
        if standby and params is None:
            raise SourceError(f"source {self.name}: backup_from is standby but no `standby:` is configured")
        self.conn = connect(params)
        facts = server_facts(self.conn)
        if facts["in_recovery"] != standby:
            where = "a standby (in recovery)" if facts["in_recovery"] else "a primary"
            raise SourceError(f"source {self.name}: {params.describe()} is {where}, but backup_from is "
                              f"{self.settings.backup_from}", "fix `backup_from` or the connection")
        if facts["data_directory"].rstrip("/") != self.pgdata:
            warn(f"the server's data_directory is {facts['data_directory']}, the policy says {self.pgdata}")
        self.tablespaces = facts.pop("tablespaces")
        self.conn.execute("SET statement_timeout = 0")
        label = f"drorch {self.name}"
        try:
            self.start_lsn = parse_lsn(str(one(self.conn, "SELECT pg_backup_start(%s, true)", (label,))))
        except psycopg.Error as exc:
            raise SourceError(f"pg_backup_start failed on {params.describe()}: {_first_line(exc)}",
                              "the connection's role needs pg_backup_start/pg_backup_stop privileges "
                              "(superuser, or GRANT EXECUTE and pg_checkpoint)") from None
        self.facts = {**facts, "mode": "physical", "backup_from": self.settings.backup_from,
                      "pgdata": self.pgdata, "start_lsn": format_lsn(self.start_lsn),
                      "tablespaces": self.tablespaces}
        log.info("%s: pg_backup_start at %s", self.name, format_lsn(self.start_lsn))
        return self.facts

    def _host_path(self, rel: str) -> str:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[0] == "pg_tblspc" and parts[1] in self.tablespaces:
            return posixpath.join(self.tablespaces[parts[1]], *parts[2:])
        return posixpath.join(self.pgdata, rel)

    def scan(self, warn: Warn) -> list[Entry]:
        entries = list(self._walk(self.pgdata, ""))
        for oid, location in sorted(self.tablespaces.items()):
            if self.host.lstat(location) is None:
                raise SourceError(f"tablespace {oid} at {location} does not exist on {self.host.name}")
            for entry in self._walk(location, f"pg_tblspc/{oid}"):
                entries.append(entry)
        skip = pg_layout.unlogged_to_skip([e.path for e in entries if e.type == FILE])
        return [e for e in entries if e.path not in skip]

    def _walk(self, root: str, prefix: str):
        def prune(path: str, is_dir: bool) -> bool:
            rel = _join(prefix, path[len(root) + 1:])
            return pg_layout.excluded(rel, is_dir)

        for path, st, target in self.host.walk(root, prune):
            rel = _join(prefix, path[len(root) + 1:])
            if not rel:
                continue
            if prefix == "" and rel.startswith("pg_tblspc/") and rel.count("/") == 1:
                entry = entry_from_stat(rel, st, None)  # a tablespace link: restored as a directory
                entry.type, entry.target = DIR, None
            else:
                entry = entry_from_stat(rel, st, target)
            if entry is None:
                continue
            entry.user = self.host.user_name(entry.uid)
            entry.group = self.host.group_name(entry.gid)
            yield entry

    def read(self, entry: Entry, offset: int = 0, length: int | None = None) -> bytes:
        return self.host.read(self._host_path(entry.path), offset, length)

    def read_many(self, entries: list[Entry], limit: int) -> dict[str, tuple[bytes, Entry | None]]:
        return read_many_from(self.host, entries, limit, lambda entry: self._host_path(entry.path))

    def start_read_many(self, entries: list[Entry], limit: int):
        return start_read_many_from(self.host, entries, limit, lambda entry: self._host_path(entry.path))

    def restat(self, entry: Entry) -> Entry | None:
        st = self.host.lstat(self._host_path(entry.path))
        return None if st is None else entry_from_stat(entry.path, st)

    def inspect(self, entry: Entry, offset: int, data: bytes) -> None:
        """Verify page checksums of data read from a relation file (worker threads)."""
        if not self.facts.get("data_checksums") or offset % PAGE:
            return
        rel = pg_layout.relation(entry.path)
        if rel is None:
            return
        first_block = rel[1] * SEGMENT_PAGES + offset // PAGE
        for index, stored, computed in bad_pages(data, first_block, self.start_lsn):
            page_offset = offset + index * PAGE
            again = self.read(entry, page_offset, PAGE)  # a page being written: read it once more
            if len(again) == PAGE and not bad_pages(again, first_block + index, self.start_lsn):
                continue
            block = first_block + index
            message = (f"{entry.path} block {block}: page checksum {stored:#06x} does not match the "
                       f"computed {computed:#06x} (data corruption)")
            with self._errors_lock:
                self._page_errors.append(message)
            log.error("%s: %s", self.name, message)

    def end(self, warn: Warn) -> SourceEnd:
        control = self.host.read(posixpath.join(self.pgdata, "global/pg_control"))
        try:
            self.conn.execute("SELECT set_config('statement_timeout', %s, false)",
                              (f"{int(self.settings.archive_timeout)}s",))
            wait = self.settings.backup_from == "primary"
            lsn, labelfile, spcmap = self.conn.execute(
                "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(%s)", (wait,)).fetchone()
        except psycopg.errors.QueryCanceled:
            raise SourceError(f"pg_backup_stop did not return within {self.settings.archive_timeout:.0f}s: "
                              "WAL archiving is not working", "check archive_command (`drorch check`) and "
                              "the server log; the backup was not committed") from None
        except psycopg.Error as exc:
            raise SourceError(f"pg_backup_stop failed: {_first_line(exc)}",
                              "see the server log; the backup was not committed") from None
        self._stopped = True
        if self.settings.backup_from == "standby":
            self._switch_primary_wal(warn)
        self.conn.close()
        label = parse_backup_label(labelfile)
        stop_lsn = parse_lsn(str(lsn))
        facts = {**label, "stop_lsn": format_lsn(stop_lsn), "backup_label": labelfile,
                 "tablespace_map": spcmap or "", "page_errors": self._page_errors[:MAX_REPORTED_PAGES],
                 "page_error_count": len(self._page_errors)}
        facts["wal_required"] = segment_range(label["start_timeline"], self.start_lsn, stop_lsn,
                                              self.facts["wal_segment_size"])
        for message in self._page_errors[:MAX_REPORTED_PAGES]:
            warn(message)
        extras = [(self._generated("backup_label"), labelfile.encode()),
                  (self._generated("global/pg_control", like="global/pg_control"), control)]
        facts["external_config"] = {}
        for setting in ("config_file", "hba_file", "ident_file"):  # Debian keeps them in /etc/postgresql
            path = self.facts.get(setting) or ""
            if path and not path.startswith(self.pgdata + "/"):
                rel = f"{EXTERNAL}/{posixpath.basename(path)}"
                facts["external_config"][setting] = {"path": path, "stored_as": rel}
                extras.append((self._generated(rel), self.host.read(path)))
        return SourceEnd(facts=facts, extra_files=extras)

    def _generated(self, rel: str, like: str = "PG_VERSION") -> Entry:
        st = self.host.lstat(posixpath.join(self.pgdata, like))
        entry = entry_from_stat(rel, st)
        entry.user, entry.group = self.host.user_name(entry.uid), self.host.group_name(entry.gid)
        entry.mode = 0o600
        return entry

    def _switch_primary_wal(self, warn: Warn) -> None:
        """A standby does not archive: have the primary close its segment so the
        WAL up to the backup's end reaches the archive."""
        try:
            with connect(self.settings.primary) as primary:
                primary.execute("SELECT pg_switch_wal()")
        except (SourceError, psycopg.Error) as exc:
            warn(f"could not switch WAL on the primary ({exc}); waiting for it to archive by itself")

    def required_archive(self, facts: dict) -> list[str]:
        """WAL files that must be in the repository before the backup may commit."""
        return list(facts.get("wal_required") or [])

    def abort(self) -> None:
        if self.conn is None or self.conn.closed:
            return
        try:
            if not self._stopped and self.start_lsn:
                self.conn.execute("SELECT pg_backup_stop(false)")
        except psycopg.Error:
            pass  # the session ending aborts the backup anyway
        finally:
            self.conn.close()

    # -- restore -----------------------------------------------------------------

    def prepare_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        prepare_target(host, options.target)
        in_place = (options.target.rstrip("/") == str(facts.get("pgdata", "")).rstrip("/")
                    and host.name == self.host.name)
        options.links.update(tablespace_links(host, options, facts, in_place))

    def finish_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        place_external_config(host, options.target, facts)
        write_recovery(host, options, facts, self.name, self.settings)

    # -- restore verification (engine/verify_restore.py) ------------------------------------

    def verify_restored(self, sandbox: Sandbox, facts: dict, host: Host, add) -> None:
        from drorch.sources.pg_verify import verify_physical

        verify_physical(self.settings, sandbox, host, add, facts)


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix and rel else (prefix or rel)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
