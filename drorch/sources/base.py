"""What every source kind (files, postgres, mariadb) offers the engine.

A source plans what to read (scan), reads it, and reports its own facts; it
never touches the repository (the engine writes what it returns into the
manifest).  For restores it prepares and finishes a target.
"""

from __future__ import annotations

import stat as statmod
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from drorch.fsmeta import Entry, entry_from_stat

Warn = Callable[[str], None]


@dataclass
class SourceEnd:
    """What a source says when its backup ends: facts for the manifest and
    small generated files (e.g. PostgreSQL's backup_label) to store as well."""

    facts: dict = field(default_factory=dict)
    extra_files: list[tuple[Entry, bytes]] = field(default_factory=list)


@dataclass
class RestoreOptions:
    target: str
    force: bool = False
    delta: bool = False
    include: list[str] = field(default_factory=list)
    #: what only one source kind understands (PostgreSQL: recovery target, --standby, ...)
    source_options: dict = field(default_factory=dict)
    #: directories of the backup that are to be symlinks to elsewhere (relative path ->
    #: absolute target), set by the source's prepare_restore (e.g. mapped tablespaces)
    links: dict = field(default_factory=dict)


@dataclass
class Check:
    """One check of a restore verification and its outcome."""

    name: str
    result: str  # passed | failed | skipped
    detail: str = ""
    seconds: float = 0.0


#: a file in a sandbox with the PID of the server a source started there: a later
#: verification kills that server's process group if this one was killed first
SERVER_PID = "server.pid"


@dataclass
class Sandbox:
    """Where a restore verification restored a backup, and what the source's
    checks are asked to do there (sources/<kind>: verify_restored)."""

    path: str  # the sandbox directory, removed after the checks
    target: str  # the restored copy, inside path
    assertions: list = field(default_factory=list)  # [(sql, expect, database)]
    timeout: float = 3600.0  # for a database to start and recover
    #: what the source started there (server pid, port ...), kept as evidence; its
    #: `startup_seconds` (restored files -> database ready) adds to the restore time
    info: dict = field(default_factory=dict)
    #: on a verify host: where the restored copy reads the archive files it needs
    #: (restore_command), which the source's checks put there with fetch_archive(name) -> bytes
    archive_dir: str | None = None
    fetch_archive: Callable[[str], bytes] | None = None


class Source(Protocol):
    name: str
    kind: str
    #: True when a file changing during its read means a torn copy (files);
    #: False where the source repairs it on restore (database WAL replay).
    detect_torn: bool

    def connect(self) -> None:
        """Reach the source's host(s) before anything is written (a refused host
        key or login fails the backup before it starts)."""

    def begin(self, warn: Warn) -> dict:
        """Start the backup (e.g. pg_backup_start); returns facts."""

    def scan(self, warn: Warn) -> Iterator[Entry]:
        """Every entry to back up, a directory before its contents."""

    def read(self, entry: Entry, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a file entry; raise FileNotFoundError if it vanished."""

    # Optional: read_many(entries, limit) -> {entry.path: (first `limit` bytes, its
    # stat after the read: Entry, os.stat_result or None)} for many small files in one round trip (remote
    # hosts); {} when it has no faster way.  Entries left out are read one by one.
    # Optional: start_read_many(entries, limit) -> a callable giving read_many's answer:
    # the request goes to the host at once, so batches known ahead are read back to back.

    def restat(self, entry: Entry) -> Entry | None:
        """The entry's metadata now (None if it is gone)."""

    def end(self, warn: Warn) -> SourceEnd:
        """Finish the backup (e.g. pg_backup_stop)."""

    def abort(self) -> None:
        """Undo begin() after a failure; must not raise."""

    def prepare_restore(self, options: RestoreOptions, facts: dict, host) -> None:
        """Refuse unsafe targets (e.g. a running server) before anything is written."""

    def finish_restore(self, options: RestoreOptions, facts: dict, host) -> None:
        """Make the restored copy usable (e.g. recovery settings) on host."""

    # Optional:
    #   inspect(entry, offset, data)   check data as it is read (e.g. page checksums)
    #   required_archive(facts) -> [names]   archive files that must be in the
    #                                        repository before the backup commits
    #   verify_restored(sandbox, facts, host, add)   restore verification: check the
    #       restored copy at sandbox.target (start the database, run its checks and
    #       the policy's assertions), calling add(Check) for each; always leave
    #       nothing running (write a started server's PID to SERVER_PID in
    #       sandbox.path).  Sources without it get the engine's file checks only.


def read_many_from(host, entries: list[Entry], limit: int,
                   host_path: Callable[[Entry], str]) -> dict[str, tuple[bytes, Entry | None]]:
    """Source.read_many through a host that reads batches (remote hosts); {} otherwise."""
    read_many = getattr(host, "read_many", None)
    if read_many is None:
        return {}
    by_path = {host_path(entry): entry for entry in entries}
    return _as_entries(by_path, read_many(list(by_path), limit))


def _as_entries(by_path: dict[str, Entry], got: dict) -> dict:
    """{entry path: (bytes, stat after)}: a regular file's os.stat_result as is (the
    pipeline compares either), anything else as an Entry of its new type."""
    return {by_path[path].path: (data, st if st is None or statmod.S_ISREG(st.st_mode)
                                 else entry_from_stat(by_path[path].path, st))
            for path, (data, st) in got.items()}


def start_read_many_from(host, entries: list[Entry], limit: int,
                         host_path: Callable[[Entry], str]) -> Callable[[], dict[str, tuple[bytes, Entry | None]]]:
    """Source.start_read_many: read_many_from, sent to the host now (hosts that
    send requests ahead) and answered when the result is called."""
    by_path = {host_path(entry): entry for entry in entries}
    start = getattr(host, "start_read_many", None)
    if start is None:
        return lambda: read_many_from(host, entries, limit, host_path)
    pending = start(list(by_path), limit)
    return lambda: _as_entries(by_path, pending())


def read_hints(host) -> tuple[int, tuple[int, int] | None]:
    """(bytes per read of a large file, (files, bytes) per batch of small ones) a host
    prefers; (0, None) means the pipeline's defaults."""
    return getattr(host, "read_unit", 0), getattr(host, "read_batch", None)
