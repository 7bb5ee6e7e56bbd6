"""What a MariaDB node of a runbook's topology is, as SQL shows it: its role
(read_only), GTID positions and replica threads."""

from __future__ import annotations

from dataclasses import dataclass

from drorch.runbook.mdbgtid import gtid_seq


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
