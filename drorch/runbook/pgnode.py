"""A PostgreSQL node of a runbook's topology: its state over SQL, its server
run through its host (pg_ctl as the OS user that owns the data directory),
its signal files and settings, and its end of WAL read from disk while it is
stopped (what data loss is measured against)."""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from drorch.errors import DrorchError, HostError, SourceError
from drorch.hosts.base import Host, RunResult
from drorch.sources.pg_conn import PgParams
from drorch.sources.pg_wal import format_lsn, parse_lsn

PROBE_TIMEOUT = 3  # seconds to connect when asking a node how it is

_STATUS_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
       pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'),
       pg_last_xact_replay_timestamp(),
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
"""


@dataclass
class NodeSpec:
    """A node as the runbook describes it, with its connection resolved."""

    name: str
    host: str
    pgdata: str
    params: PgParams
    os_user: str = "postgres"
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    replication_conninfo: str | None = None
    settings: dict = field(default_factory=dict)
    start_command: str | None = None
    stop_command: str | None = None
    drill_pgdata: str | None = None

    def peer_conninfo(self) -> str:
        """How another server reaches this one for streaming replication."""
        if self.replication_conninfo:
            return self.replication_conninfo
        return f"host={self.params.host} port={self.params.port} user={self.params.user}"


@dataclass
class NodeStatus:
    name: str
    up: bool
    error: str | None = None
    in_recovery: bool | None = None
    flush_lsn: int | None = None  # a primary's
    receive_lsn: int | None = None  # a standby's
    replay_lsn: int | None = None
    replay_paused: bool | None = None
    upstream: str | None = None  # host:port a standby streams from
    last_replay: datetime | None = None
    timeline: int | None = None

    @property
    def role(self) -> str:
        if not self.up:
            return "down"
        return "standby" if self.in_recovery else "primary"

    @property
    def head(self) -> int | None:
        """How far a primary's WAL goes (engine-neutral name, as MariaDB nodes have it)."""
        return self.flush_lsn if self.role == "primary" else None

    @property
    def applied(self) -> int | None:
        return self.replay_lsn

    def seen(self) -> dict:
        """What the last-seen record keeps of a primary."""
        return {"lsn": lsn_text(self.flush_lsn)}

    @property
    def position(self) -> int | None:
        """How far its WAL goes: a primary's flush position, a standby's received or replayed."""
        if self.role == "primary":
            return self.flush_lsn
        known = [lsn for lsn in (self.receive_lsn, self.replay_lsn) if lsn is not None]
        return max(known) if known else None

    def describe(self) -> str:
        if not self.up:
            return f"{self.name}: down ({self.error})"
        if self.role == "primary":
            return f"{self.name}: primary, timeline {self.timeline}, WAL flushed to {lsn_text(self.flush_lsn)}"
        paused = ", replay PAUSED" if self.replay_paused else ""
        stream = f", streaming from {self.upstream}" if self.upstream else ", not streaming"
        return (f"{self.name}: standby, timeline {self.timeline}, received {lsn_text(self.receive_lsn)}, "
                f"replayed {lsn_text(self.replay_lsn)}{paused}{stream}")

    def as_dict(self) -> dict:
        out = {"node": self.name, "role": self.role}
        if self.error:
            out["error"] = self.error
        for key in ("flush_lsn", "receive_lsn", "replay_lsn"):
            if getattr(self, key) is not None:
                out[key] = lsn_text(getattr(self, key))
        for key in ("replay_paused", "upstream", "timeline"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.last_replay is not None:
            out["last_replay"] = self.last_replay.isoformat()
        return out


def lsn_text(lsn: int | None) -> str:
    return "-" if lsn is None else format_lsn(lsn)


def _lsn(text: str | None) -> int | None:
    return None if text is None else parse_lsn(text)


class PgNode:
    def __init__(self, spec: NodeSpec, host: Callable[[], Host]):
        self.spec = spec
        self.name = spec.name
        self._host = host

    @property
    def host(self) -> Host:
        return self._host()

    # -- SQL -------------------------------------------------------------------------

    def connect(self, timeout: int | None = None, dbname: str | None = None):
        from drorch.sources.pg_conn import connect

        params = self.spec.params
        if timeout is not None:
            params = dataclasses.replace(params, connect_timeout=timeout)
        return connect(params, dbname)

    def status(self) -> NodeStatus:
        import psycopg

        try:
            with self.connect(PROBE_TIMEOUT) as conn:
                row = conn.execute(_STATUS_SQL).fetchone()
        except (SourceError, psycopg.Error) as exc:
            return NodeStatus(self.name, False, error=_short(exc))
        return NodeStatus(self.name, True, in_recovery=row[0], flush_lsn=_lsn(row[1]), receive_lsn=_lsn(row[2]),
                          replay_lsn=_lsn(row[3]), replay_paused=row[4], upstream=row[5], last_replay=row[6],
                          timeline=row[7])

    def query(self, sql: str, params: tuple | None = None, *, dbname: str | None = None,
              read_only: bool = True) -> list[tuple]:
        import psycopg

        try:
            with self.connect(dbname=dbname) as conn:
                if read_only:
                    conn.execute("SET default_transaction_read_only = on")
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise SourceError(f"node {self.name}: {_short(exc)}", "the query ran on "
                              f"{self.spec.params.describe()}") from None

    # -- the server, through its host ---------------------------------------------------

    def tool(self, name: str) -> str:
        return posixpath.join(self.spec.bin_dir, name)

    def run_as_owner(self, argv: list[str], timeout: float = 60, stdin: bytes | None = None) -> RunResult:
        return self.host.run(argv, user=self.spec.os_user, timeout=max(1.0, timeout), stdin=stdin)

    def running(self, timeout: float = 30) -> bool:
        """Whether a postmaster runs on the data directory (pg_ctl status)."""
        result = self.run_as_owner([self.tool("pg_ctl"), "-D", self.spec.pgdata, "status"], timeout)
        if result.exit_status == 0:
            return True
        if result.exit_status in (3, 4):  # no server running / no data directory
            return False
        raise HostError(f"node {self.name}: pg_ctl status exited {result.exit_status}: "
                        f"{result.stderr.decode(errors='replace').strip()}")

    def stop(self, mode: str = "fast", timeout: float = 60) -> RunResult:
        if self.spec.stop_command:
            return self.host.run(self.spec.stop_command, shell=True, timeout=timeout)
        return self.run_as_owner([self.tool("pg_ctl"), "-D", self.spec.pgdata, "stop", "-m", mode, "-w",
                                  "-t", str(int(max(1, timeout - 5)))], timeout)

    def start(self, timeout: float = 60) -> RunResult:
        """Start the server without waiting for it (wait_up() does)."""
        if self.spec.start_command:
            return self.host.run(self.spec.start_command, shell=True, timeout=timeout)
        return self.run_as_owner([self.tool("pg_ctl"), "-D", self.spec.pgdata, "-l", self.start_log(),
                                  "-W", "start"], timeout)

    def start_log(self) -> str:
        pgdata = self.spec.pgdata.rstrip("/")
        return f"{pgdata}-drorch.log"

    def log_tail(self) -> str:
        try:
            data = self.host.read(self.start_log())
        except (OSError, DrorchError):
            return ""
        return data[-3000:].decode(errors="replace")

    def wait_up(self, deadline: float, *, writable: bool | None = None, check_running: bool = True) -> NodeStatus:
        """Until the server answers (and is writable, or in recovery, when asked)."""
        started = time.monotonic()
        while True:
            status = self.status()
            if status.up and (writable is None or writable == (not status.in_recovery)):
                return status
            if time.monotonic() >= deadline:
                want = {True: " and writable", False: " in recovery", None: ""}[writable]
                raise DrorchError(f"node {self.name} was not up{want} in time: {status.describe()}",
                                  f"see its log: {self.start_log()}\n{self.log_tail()[-1500:]}")
            if check_running and not status.up and time.monotonic() - started > 5 and not self.running():
                raise DrorchError(f"node {self.name}: the server stopped while starting",
                                  f"its log ({self.start_log()}):\n{self.log_tail()[-1500:]}")
            time.sleep(0.3)

    # -- files of the data directory ------------------------------------------------------

    def path(self, rel: str) -> str:
        return posixpath.join(self.spec.pgdata, rel)

    def has(self, rel: str) -> bool:
        return self.host.lstat(self.path(rel)) is not None

    def touch(self, rel: str) -> None:
        self._owner_shell(f"touch {shlex.quote(self.path(rel))}")

    def remove(self, rel: str) -> None:
        self._owner_shell(f"rm -f {shlex.quote(self.path(rel))}")

    def append_settings(self, settings: dict, comment: str) -> None:
        """Append settings to postgresql.auto.conf (the last line of a setting wins)."""
        lines = [f"# {comment}"] + [f"{key} = {pg_value(value)}" for key, value in settings.items()]
        path = shlex.quote(self.path("postgresql.auto.conf"))
        self._owner_shell(f"cat >> {path}", stdin=("\n".join(lines) + "\n").encode())

    def own_settings(self) -> dict:
        """What this node needs whatever data directory it was given: its port and `settings:`."""
        return {"port": self.spec.params.port, **self.spec.settings}

    def _owner_shell(self, command: str, stdin: bytes | None = None) -> None:
        result = self.run_as_owner(["sh", "-c", command], 60, stdin=stdin)
        if not result.ok:
            raise HostError(f"node {self.name}: `{command}` failed on host {self.spec.host}: "
                            f"{result.stderr.decode(errors='replace').strip()}")

    # -- end of WAL -------------------------------------------------------------------------

    def end_of_wal(self) -> tuple[int | None, str]:
        """Where the WAL on disk ends (the server must be stopped): pg_waldump from the
        last checkpoint's redo point on the newest timeline, to its first invalid record."""
        control = self.run_as_owner([self.tool("pg_controldata"), "-D", self.spec.pgdata])
        if not control.ok:
            return None, f"pg_controldata failed: {control.stderr.decode(errors='replace').strip()}"
        facts = parse_controldata(control.text())
        seg_size = int(facts.get("Bytes per WAL segment", 16 << 20))
        redo, redo_tli = parse_lsn(facts["Latest checkpoint's REDO location"]), \
            int(facts["Latest checkpoint's TimeLineID"])
        names = [n for n in self.host.listdir(self.path("pg_wal")) or [] if re.fullmatch(r"[0-9A-F]{24}", n)]
        newest = max([int(n[:8], 16) for n in names] + [redo_tli])
        start = redo
        if newest != redo_tli:
            first = min(n for n in names if int(n[:8], 16) == newest)
            start = max(redo, segment_start(first, seg_size))
        dump = self.run_as_owner([self.tool("pg_waldump"), "-p", self.path("pg_wal"), "-t", str(newest),
                                  "-s", format_lsn(start), "-q"], 300)
        text = dump.stderr.decode(errors="replace")
        end = waldump_end(text, seg_size)
        if end is None:
            return None, f"could not read the end of WAL from pg_waldump: {text.strip()[:500]}"
        return end, f"pg_waldump on {self.spec.host}:{self.path('pg_wal')} (timeline {newest})"


def parse_controldata(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def segment_start(name: str, seg_size: int) -> int:
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    return (log * (0x100000000 // seg_size) + seg) * seg_size


_AT = re.compile(r"\bat ([0-9A-F]+/[0-9A-F]+)")
_IN_SEGMENT = re.compile(r"segment ([0-9A-F]{24}), (?:LSN [0-9A-F]+/[0-9A-F]+, )?offset (\d+)")
_MISSING = re.compile(r'could not (?:find|open) file "(?:[^"]*/)?([0-9A-F]{24})"')


def waldump_end(stderr: str, seg_size: int) -> int | None:
    """The end of valid WAL from pg_waldump's complaint about the first invalid record."""
    for line in stderr.splitlines():
        if "error" not in line:
            continue
        _, _, reason = line.partition("error in WAL record at ")
        reason = reason.partition(": ")[2] if reason else line
        if match := _IN_SEGMENT.search(reason):
            return segment_start(match.group(1), seg_size) + int(match.group(2))
        if match := _MISSING.search(reason):
            return segment_start(match.group(1), seg_size)
        if match := _AT.search(reason):
            return parse_lsn(match.group(1))
    return None


def pg_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text
    return "'" + text.replace("'", "''") + "'"


def _short(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__
