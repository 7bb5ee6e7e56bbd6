"""The `postgres` source, mode `logical`: pg_dump -Fc per database plus
pg_dumpall --globals-only, streamed into the repository (full backups only);
restore of one database into a server with pg_restore."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Iterator
from urllib.parse import quote

from psycopg import sql

from drorch.errors import RestoreError, SourceError
from drorch.fsmeta import Entry
from drorch.sources.base import RestoreOptions, SourceEnd, Warn
from drorch.sources.pg_conn import PgParams, connect, server_facts

CHUNK = 1 << 20


def dump_path(database: str) -> str:
    return f"databases/{quote(database, safe='')}.dump"


class PgLogicalSource:
    kind = "postgres"
    detect_torn = False
    full_only = True  # a dump is whole: there is nothing to build an incr or diff on

    def __init__(self, name: str, params: PgParams, bin_dir: str, databases: list[str], os_user: str = "postgres"):
        self.name = name
        self.params = params
        self.bin_dir = bin_dir
        self.databases = databases
        self.os_user = os_user  # runs the sandbox cluster of a restore verification
        self.facts: dict = {}

    def _env(self) -> dict:
        env = {**os.environ, "PGHOST": self.params.host, "PGPORT": str(self.params.port),
               "PGUSER": self.params.user, "PGCONNECT_TIMEOUT": str(self.params.connect_timeout)}
        if self.params.password:
            env["PGPASSWORD"] = self.params.password  # in the environment, never on a command line
        if self.params.sslmode:
            env["PGSSLMODE"] = self.params.sslmode
        return env

    def begin(self, warn: Warn) -> dict:
        with connect(self.params) as conn:
            facts = server_facts(conn)
            present = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")]
        missing = sorted(set(self.databases) - set(present))
        if missing:
            raise SourceError(f"source {self.name}: database(s) {', '.join(missing)} do not exist on "
                              f"{self.params.describe()}", "fix `databases:` in the policy")
        chosen = self.databases or present
        self.facts = {"mode": "logical", "pg_version": facts["pg_version"],
                      "system_identifier": facts["system_identifier"], "databases": chosen,
                      "dump_format": "custom", "pg_dump": self._tool_version("pg_dump")}
        return self.facts

    def _tool_version(self, tool: str) -> str:
        try:
            return subprocess.run([os.path.join(self.bin_dir, tool), "--version"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SourceError(f"cannot run {tool} from {self.bin_dir}: {exc}",
                              "set `bin_dir:` to the directory of the server version's client tools") from None

    def scan(self, warn: Warn) -> list[Entry]:
        return []

    def streams(self, warn: Warn) -> Iterator[tuple[Entry, Iterator[bytes]]]:
        yield _entry("globals.sql"), self._run([os.path.join(self.bin_dir, "pg_dumpall"), "--globals-only",
                                                  "-d", self.params.conninfo()], "pg_dumpall --globals-only")
        for database in self.facts["databases"]:
            argv = [os.path.join(self.bin_dir, "pg_dump"), "-Fc", "-d", self.params.conninfo(database)]
            yield _entry(dump_path(database)), self._run(argv, f"pg_dump of {database}")

    def _run(self, argv: list[str], what: str) -> Iterator[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env())
        try:
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
        finally:
            proc.stdout.close()
            stderr = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
            code = proc.wait()
        if code:
            raise SourceError(f"{what} failed (exit {code}): {stderr.splitlines()[-1] if stderr else ''}",
                              "see the message above; the backup was not committed")

    dump_path = staticmethod(dump_path)

    def read(self, entry: Entry, offset: int = 0, length: int | None = None) -> bytes:
        raise SourceError("a logical backup has no files to read")

    def restat(self, entry: Entry) -> Entry | None:
        return None

    def end(self, warn: Warn) -> SourceEnd:
        return SourceEnd()

    def abort(self) -> None:
        pass

    def prepare_restore(self, options: RestoreOptions, facts: dict, host) -> None:
        pass

    def finish_restore(self, options: RestoreOptions, facts: dict, host) -> None:
        pass

    def verify_restored(self, sandbox, facts: dict, host, add) -> None:
        from drorch.sources.pg_verify_logical import verify_logical

        verify_logical(self.bin_dir, self.os_user, sandbox, facts, dump_path, host, add)

    # -- restore of one database ---------------------------------------------------

    def restore_database(self, database: str, into: str, chunks: Iterator[bytes], table: str | None = None,
                         params: PgParams | None = None) -> float:
        """Create database `into` and pg_restore the dump into it; returns seconds."""
        params = params or self.params
        started = time.monotonic()
        with connect(params) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (into,)).fetchone():
                raise RestoreError(f"database {into} already exists on {params.describe()}; nothing was changed",
                                   "choose another name with --into, or drop it first")
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(into)))
            except Exception as exc:  # noqa: BLE001 - psycopg's errors: say what the server said
                raise RestoreError(f"cannot create database {into}: {str(exc).strip()}") from None
        argv = [os.path.join(self.bin_dir, "pg_restore"), "--exit-on-error", "-d", params.conninfo(into)]
        if table:
            argv += ["-t", table]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=self._env())
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # pg_restore stopped early: its exit status says why
        finally:
            proc.stdin.close()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait():
            raise RestoreError(f"pg_restore into {into} failed: {stderr.splitlines()[-1] if stderr else ''}",
                               f"database {into} was created and may be partly restored: drop it before retrying")
        return time.monotonic() - started


def _entry(path: str) -> Entry:
    now = time.time_ns()
    return Entry(path=path, type="file", mode=0o600, uid=os.geteuid(), gid=os.getegid(), mtime_ns=now,
                 ctime_ns=now)
