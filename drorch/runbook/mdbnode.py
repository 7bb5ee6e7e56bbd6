"""A MariaDB node of a runbook's topology: its state over SQL (read_only, GTID
positions, replica status), its server started and stopped through its host,
its fence file (an option file with `read_only = ON` the server reads at
start), and its end of binlog read from disk while it is down (what the data
loss of a promotion is measured against).  Its status is mdbstatus.py's
MdbStatus; GTID positions and distances are mdbgtid.py's."""

from __future__ import annotations

import posixpath
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from drorch.errors import DrorchError, HostError, SourceError
from drorch.hosts.base import Host, RunResult
# the GTID arithmetic and MdbStatus live beside this module; named here as before
from drorch.runbook.mdbgtid import binlog_distance, gtid_lag, gtid_seq, holds_transactions, last_gtid
from drorch.runbook.mdbstatus import MdbStatus

__all__ = ["MdbNode", "MdbSpec", "MdbStatus", "PROBE_TIMEOUT", "binlog_distance", "gtid_lag", "gtid_seq",
           "last_gtid"]

PROBE_TIMEOUT = 3


@dataclass
class MdbSpec:
    name: str
    host: str
    datadir: str
    address: str
    port: int
    user: str
    password: str | None
    repl_address: str
    repl_port: int
    repl_user: str
    repl_password: str | None
    os_user: str = "mysql"
    binlog_basename: str | None = None
    fence_file: str | None = None
    server_options: list[str] = field(default_factory=list)
    start_command: str | None = None
    stop_command: str | None = None

    @property
    def fence_path(self) -> str:
        return self.fence_file or self.datadir.rstrip("/") + ".drorch-fence.cnf"

    @property
    def binlogs(self) -> str:
        return self.binlog_basename or posixpath.join(self.datadir, "binlog")

    def default_start(self) -> str:
        """mariadbd detached; its options file is the fence file when there is one (nothing else is read)."""
        d = self.datadir.rstrip("/")
        argv = ["mariadbd", f"--datadir={d}", f"--port={self.port}", f"--bind-address={self.address}",
                f"--socket={d}/mysqld.sock", f"--pid-file={d}/mysqld.pid", f"--log-error={d}-drorch.err",
                f"--user={self.os_user}", *self.server_options]
        fence = shlex.quote(self.fence_path)
        return (f"if [ -f {fence} ]; then o=--defaults-file={fence}; else o=--no-defaults; fi; cd / && "
                f"setsid nohup {shlex.join(argv[:1])} $o {shlex.join(argv[1:])} >/dev/null 2>&1 </dev/null &")


class MdbNode:
    def __init__(self, spec: MdbSpec, host: Callable[[], Host]):
        self.spec = spec
        self.name = spec.name
        self._host = host

    @property
    def host(self) -> Host:
        return self._host()

    # -- SQL ---------------------------------------------------------------------------

    def connect(self, timeout: int | None = None, dbname: str | None = None):
        import pymysql

        spec = self.spec
        try:
            return pymysql.connect(host=spec.address, port=spec.port, user=spec.user, password=spec.password or "",
                                   database=dbname, connect_timeout=timeout or 10, autocommit=True)
        except pymysql.err.Error as exc:
            raise SourceError(f"node {self.name}: {_short(exc)}", f"connecting to {spec.address}:{spec.port} "
                              f"as {spec.user}") from None

    def status(self) -> MdbStatus:
        import pymysql

        try:
            with self.connect(PROBE_TIMEOUT) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SELECT @@read_only AS ro, @@gtid_binlog_pos AS b, @@gtid_slave_pos AS s")
                row = cur.fetchone()
                cur.execute("SHOW MASTER STATUS")
                master = cur.fetchone() or {}
                cur.execute("SHOW SLAVE STATUS")
                replica = cur.fetchone()
        except (SourceError, pymysql.err.Error) as exc:
            return MdbStatus(self.name, False, error=getattr(exc, "message", None) or _short(exc))
        replica = {k: ("" if v is None else v) for k, v in replica.items()} if replica else None
        return MdbStatus(self.name, True, read_only=bool(row["ro"]), binlog_gtid=row["b"] or "",
                         slave_gtid=row["s"] or "", io_gtid=(replica or {}).get("Gtid_IO_Pos", ""),
                         binlog_file=master.get("File"), binlog_pos=master.get("Position"), replica=replica)

    def query(self, sql: str, params: tuple | None = None, *, dbname: str | None = None,
              read_only: bool = True) -> list[tuple]:
        import pymysql

        try:
            with self.connect(dbname=dbname) as conn, conn.cursor() as cur:
                if read_only:
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        except pymysql.err.Error as exc:
            raise SourceError(f"node {self.name}: {_short(exc)}", f"the query ran on {self.spec.address}:"
                              f"{self.spec.port}") from None

    def execute(self, *statements: str) -> None:
        """Administrative statements, in order, on one connection."""
        for statement in statements:
            self.query(statement, read_only=False)

    # -- the server, through its host ------------------------------------------------------

    def pids(self) -> list[int]:
        """Processes of the pid files in the datadir that are alive."""
        d = shlex.quote(self.spec.datadir.rstrip("/"))
        script = (f"for f in {d}/*.pid; do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); "
                  "kill -0 \"$p\" 2>/dev/null && echo \"$p\"; done; true")
        result = self.host.run(["sh", "-c", script], timeout=30)
        if not result.ok:
            raise HostError(f"node {self.name}: cannot look for its server: "
                            f"{result.stderr.decode(errors='replace').strip()}")
        return [int(p) for p in result.text().split() if p.isdigit()]

    def running(self) -> bool:
        return bool(self.pids())

    def stop(self, mode: str = "fast", timeout: float = 60) -> RunResult | None:
        """fast: SHUTDOWN WAIT FOR ALL SLAVES (every replica has the binlog first), then SIGTERM;
        immediate: SIGKILL."""
        if self.spec.stop_command and mode != "immediate":
            return self.host.run(self.spec.stop_command, shell=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        if mode != "immediate":
            try:
                self.query("SHUTDOWN WAIT FOR ALL SLAVES", read_only=False)
            except DrorchError:
                pass  # not reachable over SQL, or gone already: signal it
            if self._wait_gone(min(deadline, time.monotonic() + timeout / 2)):
                return None
        for pid in self.pids():
            self.host.run(["kill", "-TERM" if mode != "immediate" else "-KILL", str(pid)], timeout=30)
        self._wait_gone(deadline)
        return None

    def _wait_gone(self, deadline: float) -> bool:
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def start(self, timeout: float = 60) -> RunResult:
        command = self.spec.start_command or self.spec.default_start()
        result = self.host.run(command, shell=True, timeout=timeout)
        if not result.ok:
            raise HostError(f"node {self.name}: the start command exited {result.exit_status}: "
                            f"{result.stderr.decode(errors='replace').strip()}")
        return result

    def start_log(self) -> str:
        return self.spec.datadir.rstrip("/") + "-drorch.err"

    def log_tail(self) -> str:
        try:
            return self.host.read(self.start_log())[-2000:].decode(errors="replace")
        except (OSError, DrorchError):
            return ""

    def wait_up(self, deadline: float, *, writable: bool | None = None) -> MdbStatus:
        while True:
            status = self.status()
            if status.up and (writable is None or writable == (not status.read_only)):
                return status
            if time.monotonic() >= deadline:
                raise DrorchError(f"node {self.name} was not up in time: {status.describe()}", self.log_tail())
            time.sleep(0.3)

    # -- the fence file -----------------------------------------------------------------------

    def write_fence(self, run_id: str) -> None:
        text = (f"# written by drorch runbook run {run_id}: this server was fenced; it must not take writes\n"
                "[mariadbd]\nread_only = ON\nskip_slave_start = ON\n")
        self.host.put(self.spec.fence_path, [text.encode()], mode=0o644)

    def remove_fence(self) -> None:
        if self.host.lstat(self.spec.fence_path) is not None:
            self.host.remove(self.spec.fence_path)

    def fenced_on_disk(self) -> bool:
        return self.host.lstat(self.spec.fence_path) is not None

    # -- end of binlog ---------------------------------------------------------------------------

    def end_of_wal(self) -> tuple[dict | None, str]:
        """The last GTID and the end (file, size) of the binlog on disk (the server must be down)."""
        base = self.spec.binlogs
        try:
            index = self.host.read(base + ".index").decode().split()
        except (OSError, DrorchError) as exc:
            return None, f"cannot read {base}.index on {self.spec.host}: {getattr(exc, 'message', exc)}"
        names = [posixpath.basename(line) for line in index if line.strip()]
        if not names:
            return None, f"{base}.index lists no binlog"
        directory = posixpath.dirname(base)
        sizes = {}
        for name in names:
            st = self.host.lstat(posixpath.join(directory, name))
            if st is not None:
                sizes[name] = st.st_size
        last = names[-1]
        dump = self.host.run(["mariadb-binlog", "--no-defaults", posixpath.join(directory, last)], timeout=300)
        text = dump.text() if dump.ok else ""
        gtid = last_gtid(text)
        if gtid is None:
            return None, f"mariadb-binlog found no GTID in {last}: {dump.stderr.decode(errors='replace')[:300]}"
        if not holds_transactions(text) and len(names) > 1 and names[-2] in sizes:
            last = names[-2]  # a restart since opened a binlog holding no transaction: the end is before it
        return ({"gtid": gtid, "file": last, "pos": sizes.get(last, 0), "sizes": sizes,
                 "position": gtid_seq(gtid), "lsn": gtid},
                f"the binlog on {self.spec.host}:{directory} ({last}, {sizes.get(last, 0)} bytes)")


def _short(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1].strip().splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
