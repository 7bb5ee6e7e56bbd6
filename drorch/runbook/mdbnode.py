"""A MariaDB node of a runbook's topology: its state over SQL (read_only, GTID
positions, replica status), its server started and stopped through its host,
its fence file (an option file with `read_only = ON` the server reads at
start), and its end of binlog read from disk while it is down (what the data
loss of a promotion is measured against).

Positions are compared as GTID sequence numbers (the highest of each
replication domain, summed): a distance is a number of transactions."""

from __future__ import annotations

import posixpath
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from drorch.errors import DrorchError, HostError, SourceError
from drorch.hosts.base import Host, RunResult

PROBE_TIMEOUT = 3
_GTID = re.compile(r"(\d+)-(\d+)-(\d+)")


def gtid_seq(text: str | None) -> int | None:
    """A GTID position (`0-1-42,1-2-7`) as one number: the highest seq_no of each domain, summed."""
    if text is None:
        return None
    domains: dict[int, int] = {}
    for domain, _, seq in _GTID.findall(text):
        domains[int(domain)] = max(domains.get(int(domain), 0), int(seq))
    return sum(domains.values())


def gtid_lag(ahead: str, behind: str) -> int:
    """Transactions in `ahead` that `behind` lacks (per domain, by seq_no)."""
    def per_domain(text: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for domain, _, seq in _GTID.findall(text or ""):
            out[int(domain)] = max(out.get(int(domain), 0), int(seq))
        return out
    have = per_domain(behind)
    return sum(max(0, seq - have.get(domain, 0)) for domain, seq in per_domain(ahead).items())


def binlog_distance(start: tuple[str, int], end: tuple[str, int], sizes: dict[str, int]) -> int | None:
    """Bytes of binlog from start (file, pos) to end (file, pos); None when a file size is unknown."""
    (file_a, pos_a), (file_b, pos_b) = start, end
    if file_a == file_b:
        return max(0, pos_b - pos_a)
    if file_a > file_b:
        return 0
    between = [name for name in sorted(sizes) if file_a < name < file_b]
    if file_a not in sizes:
        return None
    return sizes[file_a] - pos_a + sum(sizes[name] for name in between) + pos_b


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


@dataclass
class MdbStatus:
    name: str
    up: bool
    error: str | None = None
    read_only: bool | None = None
    binlog_gtid: str = ""  # gtid_binlog_pos
    slave_gtid: str = ""  # gtid_slave_pos: what it applied as a replica
    io_gtid: str = ""  # Gtid_IO_Pos: what it received
    binlog_file: str | None = None  # SHOW MASTER STATUS
    binlog_pos: int | None = None
    replica: dict | None = None  # SHOW SLAVE STATUS, when it is configured as a replica

    @property
    def role(self) -> str:
        if not self.up:
            return "down"
        return "standby" if self.read_only else "primary"

    @property
    def head(self) -> int | None:
        return gtid_seq(self.binlog_gtid) if self.role == "primary" else None

    @property
    def applied(self) -> int | None:
        return gtid_seq(self.slave_gtid) if self.replica else None

    @property
    def received(self) -> int | None:
        return gtid_seq(self.io_gtid) if self.replica and self.io_gtid else None

    @property
    def position(self) -> int | None:
        if self.role == "primary":
            return self.head
        known = [p for p in (self.applied, self.received) if p is not None]
        return max(known) if known else None

    @property
    def replay_paused(self) -> bool:
        return bool(self.replica) and self.replica.get("Slave_SQL_Running") != "Yes"

    @property
    def streaming(self) -> bool:
        return bool(self.replica) and self.replica.get("Slave_IO_Running") == "Yes"

    @property
    def upstream(self) -> str | None:
        if not self.replica:
            return None
        return f"{self.replica.get('Master_Host')}:{self.replica.get('Master_Port')}"

    @property
    def exec_coordinates(self) -> tuple[str, int] | None:
        """Where in its master's binlog it applied to (Relay_Master_Log_File, Exec_Master_Log_Pos)."""
        if not self.replica or not self.replica.get("Relay_Master_Log_File"):
            return None
        return self.replica["Relay_Master_Log_File"], int(self.replica["Exec_Master_Log_Pos"])

    @property
    def read_coordinates(self) -> tuple[str, int] | None:
        if not self.replica or not self.replica.get("Master_Log_File"):
            return None
        return self.replica["Master_Log_File"], int(self.replica["Read_Master_Log_Pos"])

    def caught_up_with_received(self) -> bool:
        return self.exec_coordinates is not None and self.exec_coordinates == self.read_coordinates

    def problem(self) -> str | None:
        if not self.replica:
            return None
        errors = [self.replica.get(k) for k in ("Last_IO_Error", "Last_SQL_Error") if self.replica.get(k)]
        return "; ".join(errors) or None

    def describe(self) -> str:
        if not self.up:
            return f"{self.name}: down ({self.error})"
        if self.role == "primary":
            return (f"{self.name}: primary (read_only OFF), GTID {self.binlog_gtid or '-'}, binlog "
                    f"{self.binlog_file}:{self.binlog_pos}")
        if not self.replica:
            return f"{self.name}: read-only, not a replica, GTID {self.binlog_gtid or '-'}"
        threads = f"IO {self.replica.get('Slave_IO_Running')}, SQL {self.replica.get('Slave_SQL_Running')}"
        problem = f", error: {self.problem()}" if self.problem() else ""
        return (f"{self.name}: replica of {self.upstream} ({threads}), applied GTID {self.slave_gtid or '-'}, "
                f"received {self.io_gtid or '-'}{problem}")

    def as_dict(self) -> dict:
        out: dict = {"node": self.name, "role": self.role}
        if self.error:
            out["error"] = self.error
        if self.up:
            out.update(read_only=self.read_only, gtid_binlog_pos=self.binlog_gtid)
            if self.binlog_file:
                out["binlog"] = f"{self.binlog_file}:{self.binlog_pos}"
        if self.replica:
            out.update(gtid_slave_pos=self.slave_gtid, gtid_io_pos=self.io_gtid, upstream=self.upstream,
                       io_running=self.replica.get("Slave_IO_Running"),
                       sql_running=self.replica.get("Slave_SQL_Running"))
            if self.exec_coordinates:
                out["exec"] = "%s:%d" % self.exec_coordinates
        return out

    def seen(self) -> dict:
        """What the last-seen record keeps of a primary."""
        return {"gtid": self.binlog_gtid, "file": self.binlog_file, "pos": self.binlog_pos,
                "position": self.head, "lsn": self.binlog_gtid}


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
        gtid = last_gtid(dump.text() if dump.ok else "")
        if gtid is None:
            return None, f"mariadb-binlog found no GTID in {last}: {dump.stderr.decode(errors='replace')[:300]}"
        return ({"gtid": gtid, "file": last, "pos": sizes.get(last, 0), "sizes": sizes,
                 "position": gtid_seq(gtid), "lsn": gtid},
                f"the binlog on {self.spec.host}:{directory} ({last}, {sizes.get(last, 0)} bytes)")


_GTID_EVENT = re.compile(r"\bGTID (\d+-\d+-\d+)")
_GTID_LIST = re.compile(r"Gtid list \[([^\]]*)\]")


def last_gtid(dump: str) -> str | None:
    """The position after the last event group of a binlog, from mariadb-binlog's output:
    the binlog's Gtid list (state at its start) updated with each GTID event, per domain."""
    state: dict[str, str] = {}
    for line in dump.splitlines():
        if match := _GTID_LIST.search(line):
            for gtid in _GTID.finditer(match.group(1)):
                state[gtid.group(1)] = gtid.group(0)
        elif match := _GTID_EVENT.search(line):
            gtid = match.group(1)
            state[gtid.split("-")[0]] = gtid
    if not state:
        return None
    return ",".join(state[d] for d in sorted(state, key=int))


def _short(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1].strip().splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
