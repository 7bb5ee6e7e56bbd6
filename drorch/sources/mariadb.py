"""The `mariadb` source, mode `physical`: mariabackup --backup --stream=xbstream
run on the database host and streamed into the repository (no staging copy on
the backup host).  incr starts at the parent's to_lsn, diff at the last full's
(the engine's chain rules); the manifest records LSNs, binlog file/position
and GTID.  Restore is mariadb_restore.py; binlogs are engine/binlog.py.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import time
from dataclasses import dataclass, field
from typing import Iterator

from drorch.errors import SourceError
from drorch.fsmeta import Entry
from drorch.hosts.base import Host
from drorch.sources.base import Check, RestoreOptions, SourceEnd, Warn
from drorch.sources.mariadb_facts import backup_facts, parse_vertical, replica_position

log = logging.getLogger(__name__)
CHUNK = 1 << 20
STREAM_PATH = "mariabackup.xbstream"


@dataclass
class MariadbSettings:
    datadir: str
    host: str = "127.0.0.1"
    port: int = 3306
    socket: str | None = None
    user: str = "root"
    password: str | None = None
    os_user: str = "mysql"
    backup_options: list[str] = field(default_factory=list)
    throttle: int | None = None
    backup_from: str = "primary"

    def client_options(self) -> str:
        """An option file's [client] section (the password never goes on a command line)."""
        lines = ["[client]", f"user={self.user}"]
        if self.password is not None:
            lines.append(f"password={self.password}")
        if self.socket:
            lines.append(f"socket={self.socket}")
        else:
            lines += [f"host={self.host}", f"port={self.port}", "protocol=TCP"]
        return "\n".join(lines) + "\n"


class MariadbSource:
    kind = "mariadb"
    detect_torn = False
    restores_chain = True  # restore prepares the whole chain (engine/chain_restore.py)
    archives_binlogs = True  # after each backup the engine archives closed binlogs

    def __init__(self, name: str, host: Host, settings: MariadbSettings, databases: list[str] | None = None):
        self.name = name
        self.databases = databases or []
        self.host = host  # the database host: mariabackup runs there
        self.settings = settings
        self.backup_type = "full"
        self.parent_facts: dict | None = None
        self.workdir: str | None = None
        self.process = None
        self.facts: dict = {}
        self.tool_log = ""  # mariabackup's stderr (--slave-info logs the replica's position there)

    # -- helpers -----------------------------------------------------------------

    def run(self, argv: list[str], what: str, stdin=None, timeout: float | None = 600) -> str:
        result = self.host.run(argv, stdin=stdin, timeout=timeout)
        if not result.ok:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise SourceError(f"{what} failed on {self.host.name} (exit {result.exit_status}): "
                              f"{detail[-1] if detail else ''}", "see the message above")
        return result.text()

    def sql(self, query: str, names: bool = False) -> str:
        """One query through the `mariadb` client on the database host (tab-separated rows; with
        names, column names too: a `\\G` query then gives `Key: value` lines)."""
        options = posixpath.join(self._workdir(), "client.cnf")
        return self.run(["mariadb", f"--defaults-extra-file={options}", "--default-character-set=utf8mb4",
                         *([] if names else ["-N"]), "-B", "-e", query], f"query {query!r}")

    def _workdir(self) -> str:
        """A private directory on the database host: option file, mariabackup's scratch."""
        if self.workdir is None:
            self.workdir = self.run(["mktemp", "-d", "/tmp/drorch-mariadb-XXXXXXXX"], "mktemp").strip()
            self.host.put(posixpath.join(self.workdir, "client.cnf"),
                          [self.settings.client_options().encode()], mode=0o600)
        return self.workdir

    def cleanup(self) -> None:
        if self.workdir:
            self.host.run(["rm", "-rf", self.workdir], timeout=60)
            self.workdir = None

    # -- backup ------------------------------------------------------------------

    def plan(self, backup_type: str, parent_facts: dict | None) -> None:
        """Told by the engine before begin(): what to take and what to build on."""
        self.backup_type, self.parent_facts = backup_type, parent_facts

    def begin(self, warn: Warn) -> dict:
        version = self.sql("SELECT VERSION()").strip()
        log_bin = self.sql("SELECT @@log_bin").strip() == "1"
        if not log_bin:
            warn("binary logging is off: backups restore, but not to a point in time (set log_bin)")
        basename = self.sql("SELECT @@log_bin_basename").strip() if log_bin else ""
        self.facts = {"mode": "physical", "server_version": version, "log_bin": log_bin,
                      "binlog_basename": basename if basename != "NULL" else "",
                      "server_id": self.sql("SELECT @@server_id").strip(), "datadir": self.settings.datadir,
                      "backup_from": self.settings.backup_from}
        if self.settings.backup_from == "replica":
            self.facts.update(self._replica_facts(warn))
        if self.backup_type != "full":
            self.facts["incremental_lsn"] = int(self.parent_facts["to_lsn"])
        return self.facts

    def _replica_facts(self, warn: Warn) -> dict:
        """backup_from replica: whose replica it is (its position at the backup's point comes from
        mariabackup --slave-info, in end())."""
        status = parse_vertical(self.sql("SHOW REPLICA STATUS\\G", names=True))
        if not status:
            raise SourceError(f"source {self.name}: backup_from is replica, but the server it connects to is "
                              "not a replica (SHOW REPLICA STATUS is empty)", "fix `backup_from` or the connection")
        if status.get("Slave_SQL_Running") != "Yes" or status.get("Slave_IO_Running") != "Yes":
            warn(f"replication is not running on the replica (IO {status.get('Slave_IO_Running')}, "
                 f"SQL {status.get('Slave_SQL_Running')}): the backup may be behind its primary")
        return {"replica_of": f"{status.get('Master_Host')}:{status.get('Master_Port')}",
                "replica_using_gtid": status.get("Using_Gtid", ""),
                "replica_lag_seconds": status.get("Seconds_Behind_Master", "")}

    def scan(self, warn: Warn) -> list[Entry]:
        return []

    def _argv(self) -> list[str]:
        work = self._workdir()
        argv = ["mariabackup", f"--defaults-extra-file={posixpath.join(work, 'client.cnf')}", "--backup",
                "--stream=xbstream", f"--target-dir={posixpath.join(work, 'scratch')}",
                f"--extra-lsndir={posixpath.join(work, 'lsn')}", f"--datadir={self.settings.datadir}",
                *self.settings.backup_options]
        if self.settings.throttle:
            argv.append(f"--throttle={self.settings.throttle}")
        if self.backup_type != "full":
            argv.append(f"--incremental-lsn={self.facts['incremental_lsn']}")
        if self.settings.backup_from == "replica":
            argv += ["--slave-info", "--safe-slave-backup"]
        return argv

    def streams(self, warn: Warn) -> Iterator[tuple[Entry, Iterator[bytes]]]:
        now = time.time_ns()
        entry = Entry(path=STREAM_PATH, type="file", mode=0o600, mtime_ns=now, ctime_ns=now)
        yield entry, self._stream()

    def _stream(self) -> Iterator[bytes]:
        argv = self._argv()
        log.info("%s: %s", self.name, " ".join(shlex.quote(a) for a in argv))
        self.process = self.host.start(argv)
        while chunk := self.process.read(CHUNK):
            yield chunk
        result = self.process.wait(timeout=600)
        self.process = None
        self.tool_log = result.stderr.decode(errors="replace")
        if not result.ok:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise SourceError(f"mariabackup failed on {self.host.name} (exit {result.exit_status}): {reason}",
                              "see mariabackup's message; the backup was not committed")

    def end(self, warn: Warn) -> SourceEnd:
        lsn = posixpath.join(self._workdir(), "lsn")
        checkpoints = self.host.read(posixpath.join(lsn, "xtrabackup_checkpoints")).decode()
        info = self.host.read(posixpath.join(lsn, "xtrabackup_info")).decode()
        facts = backup_facts(checkpoints, info)
        self.cleanup()
        if self.backup_type != "full" and facts["from_lsn"] != self.facts["incremental_lsn"]:
            raise SourceError(f"mariabackup started at LSN {facts['from_lsn']}, not at the parent's "
                              f"{self.facts['incremental_lsn']}")
        if self.settings.backup_from == "replica":
            position = replica_position(self.tool_log)
            if not position:
                warn("mariabackup logged no replication position (--slave-info): the backup does not say "
                     "where the replica was in its primary's binlog")
            facts.update(position)
        return SourceEnd(facts=facts)

    def abort(self) -> None:
        if self.process is not None:
            try:
                self.process.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.process = None
        try:
            self.cleanup()
        except Exception:  # noqa: BLE001 - abort must not raise
            pass

    def read(self, entry: Entry, offset: int = 0, length: int | None = None) -> bytes:
        raise SourceError("a mariabackup stream has no files to read")

    def restat(self, entry: Entry) -> Entry | None:
        return None

    def closed_binlogs(self) -> list[str]:
        """Paths (on the database host) of binlogs the server no longer writes."""
        basename = self.facts.get("binlog_basename") or self.sql("SELECT @@log_bin_basename").strip()
        if not basename or basename == "NULL":
            return []
        rows = [line.split("\t")[0] for line in self.sql("SHOW BINARY LOGS").splitlines() if line.strip()]
        return [posixpath.join(posixpath.dirname(basename), name) for name in rows[:-1]]

    def flush_binlogs(self) -> None:
        self.sql("FLUSH BINARY LOGS")

    # -- restore (mariadb_restore.py does the work) --------------------------------

    def prepare_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        pass

    def finish_restore(self, options: RestoreOptions, facts: dict, host: Host) -> None:
        pass

    def verify_restored(self, sandbox, facts: dict, host: Host, add) -> None:
        """Restore verification (engine/verify_restore.py): start the restored datadir, CHECK TABLE."""
        if not self.restores_chain:  # logical dumps: loaded into a new server in the sandbox
            from drorch.sources.mariadb_verify_logical import verify_logical

            verify_logical(self.settings.os_user, sandbox, facts, self.dump_path, host, add)
            return
        from drorch.sources.mariadb_verify import verify_physical

        verify_physical(self.settings.os_user, sandbox, host, add)
