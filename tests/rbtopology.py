"""A failover topology on one machine for the runbook tests: a primary (db1)
archiving into a drorch repository, a streaming standby (db2, pg_basebackup
-R) and an empty DR data directory (dr1).  Every "host" is its own
throwaway sshd on a loopback port; drorch logs in as root and runs
PostgreSQL commands as postgres (sudo -n -u postgres)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.pg import BIN, Cluster, as_postgres, shared_tmpdir
from tests.sshd import SSHD, make_setup, scratch_dir

SOURCE = "main-db"
RUNBOOK = "rb"
MAX_LAG = "4MB"


def runbook_yaml(env: "Topology", auto_escalate: bool = False) -> str:
    nodes = ""
    for cluster in (env.db1, env.db2, env.dr1):
        name = cluster.pgdata.name
        # What a real fence command does (power off, and boot fenced) stood in for: a marker,
        # and standby.signal so that the server comes back read-only.
        command = f"touch {env.base}/fenced-{name} && runuser -u postgres -- touch {cluster.pgdata}/standby.signal"
        fence = f"\n        fence_command: {{host: local, command: \"{command}\"}}" if name != "dr1" else ""
        nodes += f"""
      {name}:
        host: {name}
        pgdata: {cluster.pgdata}
        connection: {{host: 127.0.0.1, port: {cluster.port}, user: postgres, connect_timeout: 3s}}
        settings: {{unix_socket_directories: "{env.base}", listen_addresses: 127.0.0.1}}{fence}"""
    return f"""\
runbook:
  id: {RUNBOOK}
  title: Test topology failover
  owners: [tests]
  summary: |
    db1 primary, db2 streaming standby, dr1 restored from the repository.
  topology:
    name: test-topology
    nodes:{nodes}
    primary: db1
    standbys: [db2]
    dr: [dr1]
    source: {SOURCE}
    max_lag: {MAX_LAG}
  objectives: {{rto: 5m, rpo: 5m, rpo_bytes: 16MB}}
  modes: [switchover, failover, dr-activate, drill]
  lease: 10s
  steps:
    - id: confirm-primary-down
      title: Confirm that the primary is down
      modes: [failover]
      text: A failover is for a primary that does not answer.
      action: pg.status
      args: {{node: primary, expect: {{role: down}}}}
      timeout: 10s
    - id: announce
      title: Tell the on-call channel
      action: notify
      args: {{message: "${{mode}} started: ${{primary}} -> ${{candidate}}", severity: warning}}
      on_failure: continue
    - id: nearly-caught-up
      title: Wait until the standby is nearly caught up
      modes: [switchover]
      action: pg.wait_caught_up
      args: {{node: candidate, of: primary, max_lag: 1MB}}
      timeout: 30s
    - id: fence-old-primary
      title: Fence the old primary
      text: Stop it and leave standby.signal behind.
      action: pg.fence
      args: {{nodes: [primary], approval_timeout: 5s}}
      timeout: 90s
    - id: caught-up
      title: Wait until the standby has every committed transaction
      modes: [switchover]
      action: pg.wait_caught_up
      args: {{node: candidate, of: primary, max_lag: 0}}
      timeout: 30s
      on_failure: rollback
    - id: replayed
      title: Let the standby replay what it received
      modes: [failover]
      action: pg.wait_caught_up
      args: {{node: candidate, received: true}}
      timeout: 30s
    - id: promote
      title: Promote the standby
      action: pg.promote
      args: {{node: candidate}}
      timeout: 60s
      on_failure: rollback
    - id: repoint
      title: Other standbys follow
      action: pg.repoint
      on_failure: continue
    - id: rejoin-old-primary
      title: The old primary becomes a standby of the new one
      modes: [switchover]
      action: pg.rewind
      args: {{node: primary, source: new_primary, fallback: rebuild}}
      timeout: 3m
    - id: check-writes
      title: The new primary takes writes
      action: sql.check
      args: {{node: new_primary, query: "SELECT txid_current() > 0", write: true, expect: {{equals: true}}}}
      timeout: 30s
    - id: check-data
      title: The data is there
      action: sql.check
      args: {{node: new_primary, query: "SELECT count(*) FROM checks", expect: {{min: 1}}}}
      milestone: verified
    - id: old-primary-not-writable
      title: The old primary does not take writes
      action: pg.status
      args: {{node: primary, expect: {{writable: false}}}}
  rollback:
    - id: rollback-restart
      title: Start the old primary again
      action: pg.start
      args: {{node: primary, writable: true}}
  dr_branch:
    auto_escalate: {str(auto_escalate).lower()}
    approval: {{timeout: 2m, default: reject}}
    steps:
      - id: dr-fence
        title: Fence the primary and the standby
        modes: [dr-activate]
        action: pg.fence
        args: {{nodes: [primary, standbys], approval_timeout: 5s}}
        timeout: 90s
      - id: dr-restore
        title: Restore the newest backup and the archived WAL onto the DR node
        action: pg.restore
        args: {{node: dr}}
        timeout: 5m
      - id: dr-check-writes
        title: The DR node takes writes
        action: sql.check
        args: {{node: dr, query: "SELECT txid_current() > 0", write: true, expect: {{equals: true}}}}
      - id: dr-check-data
        title: The data is there
        action: sql.check
        args: {{node: dr, query: "SELECT count(*) FROM checks WHERE note = 'before-dr'", expect: {{min: 1}}}}
        milestone: verified
"""


class Topology:
    def __init__(self, runtime: Path):
        self.base = shared_tmpdir("drorch-rb-")
        self.runtime = runtime
        self.repo = self.base / "repo"
        self.policies = self.base / "policies"
        self.policies.mkdir()
        self.state = self.base / "state"
        self.ssh = {}
        self.clusters: list[Cluster] = []
        self.db1, self.db2, self.dr1 = (Cluster(self.base, name) for name in ("db1", "db2", "dr1"))
        self.clusters += [self.db1, self.db2, self.dr1]
        for name in ("db1", "db2", "dr1"):
            self.ssh[name] = make_setup(scratch_dir("drorch-rbssh-"))
        self.write_policy()
        self.db1.init(archive_mode="on", archive_command=f"'{runtime} wal-push --policy {self.policies}/policy.yaml "
                                                         f"--source {SOURCE} %p'", wal_keep_size="'256MB'",
                      wal_log_hints="on")
        self.db1.start()
        self.build_standby()

    def write_policy(self, auto_escalate: bool = False) -> None:
        hosts = "".join(setup.host_yaml(name) for name, setup in self.ssh.items())
        (self.policies / "policy.yaml").write_text(f"""\
hosts:
{hosts}repositories:
  local:
    type: posix
    path: {self.repo}
    group: postgres
sources:
  {SOURCE}:
    kind: postgres
    host: db1
    repository: local
    pgdata: {self.db1.pgdata}
    connection: {{host: 127.0.0.1, port: {self.db1.port}, user: postgres}}
    drorch_command: {self.runtime}
    archive: {{timeout: 60s}}
""")
        (self.policies / "runbook.yaml").write_text(runbook_yaml(self, auto_escalate))

    def build_standby(self) -> None:
        shutil.rmtree(self.db2.pgdata, ignore_errors=True)
        as_postgres([BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", self.db1.port, "-U", "postgres",
                     "-D", self.db2.pgdata, "-R", "-X", "stream", "-c", "fast"])
        self.db2.configure(unix_socket_directories=f"'{self.db2.pgdata}'")
        self.db2.start()

    # -- looking at it -------------------------------------------------------------------

    def by_name(self, name: str) -> Cluster:
        return {"db1": self.db1, "db2": self.db2, "dr1": self.dr1}[name]

    def writable(self) -> list[str]:
        out = []
        for cluster in (self.db1, self.db2, self.dr1):
            try:
                if cluster.scalar("SELECT NOT pg_is_in_recovery()"):
                    out.append(cluster.pgdata.name)
            except Exception:  # noqa: BLE001 - down
                pass
        return out

    def primary(self) -> Cluster:
        names = self.writable()
        assert len(names) == 1, f"writable servers: {names}"
        return self.by_name(names[0])

    def standby(self) -> Cluster:
        primary = self.primary()
        return self.db2 if primary is self.db1 else self.db1

    def wait_streaming(self, cluster: Cluster, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cluster.scalar("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"):
                    return
            except Exception:  # noqa: BLE001 - starting
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{cluster.pgdata.name} does not stream:\n{cluster.log()[-2000:]}")

    def wait_replayed(self, standby: Cluster, primary: Cluster, timeout: float = 60) -> None:
        target = primary.scalar("SELECT pg_current_wal_flush_lsn()::text")
        deadline = time.monotonic() + timeout
        while standby.scalar("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())", target) > 0:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)

    def kill_postmaster(self, cluster: Cluster) -> None:
        pid = cluster.pid()
        assert pid, f"{cluster.pgdata.name} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # its backends notice the postmaster's death and exit

    def restart_sshd(self, name: str) -> None:
        """The host comes back: its sshd again, same port and host key."""
        server = self.ssh[name].server
        log = open(server.dir / "sshd.log", "ab")
        server.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(server.config)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while server.process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((server.address, server.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd of {name} did not come back")

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.started = True
            cluster.kill()
        for setup in self.ssh.values():
            setup.server.stop()
            subprocess.run(["rm", "-rf", str(setup.dir)], check=False)
        subprocess.run(["rm", "-rf", str(self.base)], check=False)
