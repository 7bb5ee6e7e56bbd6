"""The `mariadb` source, mode `logical`: mariadb-dump --single-transaction
--routines --events --triggers per database (full backups only), restored
one database at a time, optionally under a new name."""

from __future__ import annotations

import posixpath
import time
from typing import Iterator
from urllib.parse import quote

from drorch.errors import RestoreError, SourceError
from drorch.fsmeta import Entry
from drorch.sources.base import RestoreOptions, SourceEnd, Warn
from drorch.sources.mariadb import CHUNK, MariadbSource

SYSTEM = {"information_schema", "performance_schema", "sys", "mysql"}


def dump_path(database: str) -> str:
    return f"databases/{quote(database, safe='')}.sql"


class MariadbLogicalSource(MariadbSource):
    full_only = True
    restores_chain = False
    archives_binlogs = False
    dump_path = staticmethod(dump_path)

    def begin(self, warn: Warn) -> dict:
        present = [line.strip() for line in self.sql("SHOW DATABASES").splitlines() if line.strip()]
        wanted = self.databases or [d for d in present if d not in SYSTEM]
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise SourceError(f"source {self.name}: database(s) {', '.join(missing)} do not exist",
                              "fix `databases:` in the policy")
        self.facts = {"mode": "logical", "server_version": self.sql("SELECT VERSION()").strip(),
                      "databases": wanted, "format": "sql"}
        return self.facts

    def streams(self, warn: Warn) -> Iterator[tuple[Entry, Iterator[bytes]]]:
        options = posixpath.join(self._workdir(), "client.cnf")
        for database in self.facts["databases"]:
            now = time.time_ns()
            entry = Entry(path=dump_path(database), type="file", mode=0o600, mtime_ns=now, ctime_ns=now)
            argv = ["mariadb-dump", f"--defaults-extra-file={options}", "--single-transaction", "--routines",
                    "--events", "--triggers", "--hex-blob", database]
            yield entry, self._command_stream(argv, f"mariadb-dump of {database}")

    def _command_stream(self, argv: list[str], what: str) -> Iterator[bytes]:
        self.process = self.host.start(argv)
        while chunk := self.process.read(CHUNK):
            yield chunk
        result = self.process.wait(timeout=600)
        self.process = None
        if not result.ok:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise SourceError(f"{what} failed (exit {result.exit_status}): {detail[-1] if detail else ''}")

    def end(self, warn: Warn) -> SourceEnd:
        self.cleanup()
        return SourceEnd()

    def restore_database(self, database: str, into: str, chunks: Iterator[bytes], table: str | None = None) -> float:
        if table:
            raise RestoreError("--table is not available for mariadb logical backups (the dump is SQL)",
                               exit_code=2)
        started = time.monotonic()
        try:
            exists = self.sql(f"SELECT 1 FROM information_schema.schemata WHERE schema_name = '{_literal(into)}'")
            if exists.strip():
                raise RestoreError(f"database {into} already exists; nothing was changed",
                                   "choose another name with --into, or drop it first")
            self.sql(f"CREATE DATABASE `{_ident(into)}`")
            options = posixpath.join(self._workdir(), "client.cnf")
            result = self.host.run(["mariadb", f"--defaults-extra-file={options}", into], stdin=chunks,
                                   timeout=None)
            if not result.ok:
                detail = result.stderr.decode(errors="replace").strip().splitlines()
                raise RestoreError(f"loading the dump of {database} into {into} failed: "
                                   f"{detail[-1] if detail else ''}",
                                   f"database {into} was created and may be partly loaded: drop it before retrying")
        finally:
            self.cleanup()
        return time.monotonic() - started

    def prepare_restore(self, options: RestoreOptions, facts: dict, host) -> None:
        pass


def _literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


def _ident(text: str) -> str:
    return text.replace("`", "``")
