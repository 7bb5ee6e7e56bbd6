"""The runbook file: a top-level `runbook:` mapping (pydantic v2, unknown keys
refused).  It is loaded with the policy (policy/loader.py) so every problem is
reported as FILE:LINE:COL: key: message; checks across keys (step ids, goto
targets, nodes, placeholders) are in checks.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from drorch.policy.models import MariadbConnection, Model, PgConnection, _absolute
from drorch.policy.types import Duration, Name, SecretRef
from drorch.runbook.actions import ACTIONS
from drorch.runbook.model_types import ByteSize

MODES = ("switchover", "failover", "dr-activate", "drill")
MAIN_MODES = ("switchover", "failover")  # modes that run `steps:`
DR_MODES = ("dr-activate", "drill")  # modes that run `dr_branch.steps` (escalation runs them as dr-activate)
Mode = Literal["switchover", "failover", "dr-activate", "drill"]
ROLLBACK_MODES = ("switchover", "failover", "dr-activate")  # by default: a drill changes nothing to undo
MILESTONES = ("detected", "started", "fenced", "promoted", "writable", "restored", "verified", "finished")



# --- topology -------------------------------------------------------------------


class FenceCommand(Model):
    """How to fence a node whose host drorch cannot reach (power off, cut its
    network, detach its storage): run on another host; success is the proof."""

    host: Name = Field("local", description="where the command runs (`local` or a `hosts:` entry)")
    command: str = Field(description="a shell command; exit 0 means the node is fenced")


class PgNode(Model):
    """A PostgreSQL server of the topology."""

    host: Name = Field("local", description="the machine it runs on (`local` or a `hosts:` entry)")
    pgdata: str = Field(description="its data directory")
    connection: PgConnection = Field(description="how drorch connects to it (SQL)")
    os_user: str = Field("postgres", description="the OS user that owns the data directory")
    bin_dir: str = Field("/usr/lib/postgresql/15/bin", description="where pg_ctl, pg_rewind... live")
    replication_conninfo: str | None = Field(
        None, description="how the other servers reach this one for streaming (default: from `connection`)")
    settings: dict[str, str | int | bool] = Field(
        default_factory=dict, description="server settings this node needs whatever data directory it runs "
        "(written after a restore, rebuild or rewind); its `connection.port` is always written")
    start_command: str | None = Field(None, description="start the server (default: pg_ctl start), e.g. "
                                      "`systemctl start postgresql@15-main`")
    stop_command: str | None = Field(None, description="stop the server (default: pg_ctl stop)")
    fence_command: FenceCommand | None = Field(None, description="fences this node when its host is unreachable")
    drill_pgdata: str | None = Field(None, description="where drills restore on this node (default: "
                                     "<pgdata>-drill)")

    _abs = field_validator("pgdata", "bin_dir", "drill_pgdata")(lambda v: v if v is None else _absolute(v))


class ReplicationAccess(Model):
    """How the other servers replicate from this one (CHANGE MASTER TO)."""

    host: str | None = Field(None, description="address the replicas connect to (default: `connection.host`)")
    port: int | None = Field(None, ge=1, le=65535, description="default: `connection.port`")
    user: str = Field("repl", description="a user with REPLICATION SLAVE")
    password: SecretRef | None = None


class MariadbNode(Model):
    """A MariaDB server of the topology (GTID replication)."""

    host: Name = Field("local", description="the machine it runs on (`local` or a `hosts:` entry)")
    datadir: str = Field(description="its datadir")
    connection: MariadbConnection = Field(description="how drorch connects to it (SQL over TCP)")
    replication: ReplicationAccess = Field(default_factory=ReplicationAccess,
                                           description="how the replicas reach it")
    os_user: str = Field("mysql", description="the OS user that owns the datadir")
    binlog_basename: str | None = Field(None, description="where its binlogs are, read from disk while it is "
                                        "down (default: <datadir>/binlog)")
    fence_file: str | None = Field(None, description="an option file the server reads at start; fencing writes "
                                   "`read_only = ON` there (default: <datadir>.drorch-fence.cnf)")
    server_options: list[str] = Field(default_factory=list, description="options of the default start command "
                                      "(server-id, log-bin, ...)")
    start_command: str | None = Field(None, description="start the server (default: mariadbd with the fence "
                                      "file, datadir, port and `server_options`, detached)")
    stop_command: str | None = Field(None, description="stop the server (default: SHUTDOWN over SQL, then the "
                                     "pid file's process is signalled)")
    fence_command: FenceCommand | None = Field(None, description="fences this node when its host is unreachable")
    drill_datadir: str | None = Field(None, description="where drills restore on this node (default: "
                                      "<datadir>-drill)")

    _abs = field_validator("datadir", "binlog_basename", "fence_file", "drill_datadir")(
        lambda v: v if v is None else _absolute(v))

    @property
    def pgdata(self) -> str:  # the node's data directory, whatever the engine calls it
        return self.datadir


class TopologyBase(Model):
    name: Name | None = Field(None, description="what the runbook lease is held on (default: the runbook id); "
                              "give runbooks of one topology the same name")
    primary: Name = Field(description="the node that is primary when nothing has failed over yet")
    standbys: list[Name] = Field(default_factory=list, description="standbys (streaming standbys, replicas), in order of preference")
    dr: list[Name] = Field(default_factory=list, description="DR nodes, fed only from the repository")
    source: Name | None = Field(None, description="the policy source whose backups and WAL / binlog archive feed DR")
    repository: Name | None = Field(None, description="where journals and leases live (default: the "
                                    "source's repository)")


class PgTopology(TopologyBase):
    """The servers a runbook acts on, and the backups that feed the DR host."""

    engine: Literal["postgres"] = "postgres"
    nodes: dict[Name, PgNode] = Field(min_length=1)
    max_lag: ByteSize = Field(16 << 20, description="a standby whose replay lags more than this is not promoted")


class MariadbTopology(TopologyBase):
    """MariaDB servers with GTID replication, and the backups that feed the DR host."""

    engine: Literal["mariadb"]
    nodes: dict[Name, MariadbNode] = Field(min_length=1)
    max_lag: int = Field(1000, ge=0, description="a replica more than this many transactions (GTID sequence "
                         "numbers) behind is not promoted")


Topology = Annotated[Union[Annotated[PgTopology, Tag("postgres")], Annotated[MariadbTopology, Tag("mariadb")]],
                     Discriminator(lambda v: (v.get("engine", "postgres") if isinstance(v, dict) else
                                              getattr(v, "engine", "postgres")),
                                   custom_error_type="invalid_engine",
                                   custom_error_message="`engine` must be one of: postgres, mariadb")]


class Objectives(Model):
    rto: Duration | None = Field(None, description="service back within this long after the failure")
    rpo: Duration | None = Field(None, description="at most this much time of committed data lost")
    rpo_bytes: ByteSize | None = Field(None, description="at most this much WAL (binlog) lost by a promotion")
    rpo_transactions: int | None = Field(None, ge=0, description="MariaDB: at most this many transactions "
                                         "lost by a promotion")


class Approval(Model):
    """A person confirms first (on the terminal, or `drorch runbook approve RUN STEP`)."""

    prompt: str | None = Field(None, description="what is confirmed (default: the step's title)")
    timeout: Duration = Field(timedelta(minutes=15), description="how long to wait for an answer")
    default: Literal["approve", "reject"] = Field(description="what happens when nobody answers in time")


class Notify(Model):
    webhook: str | None = Field(None, description="notify events are POSTed here as JSON (besides the "
                                "policy's `notify:` channels, which hear every run's end and `notify` steps)")


class RunbookHooks(Model):
    """Scripts run on the runner's host after every step (hooks/README.md: post_runbook_step)."""

    post_step: list[str] = Field(default_factory=list, description="after each step of a run (not in plan); "
                                 "a failing hook is reported, never fails the step")
    timeout: Duration = Field(timedelta(minutes=5), description="a hook still running after this is killed")


# --- steps -------------------------------------------------------------------------

class GuardBase(Model):
    otherwise: Literal["fail", "skip"] = Field("fail", description="when it does not hold: fail the step "
                                               "(on_failure applies) or skip it")


def _tag(value: Any) -> Any:
    return value.get("action") if isinstance(value, dict) else getattr(value, "action", None)


def _args_field(action) -> tuple:
    try:
        default = action.Args()
    except Exception:  # noqa: BLE001 - required arguments: no default
        return (action.Args, Field(description=f"arguments of {action.name}"))
    return (action.Args, Field(default, description=f"arguments of {action.name}"))


def _union(base: type, actions: list, name: str):
    members = []
    for action in actions:
        cls = create_model(f"{name}_{action.name.replace('.', '_')}", __base__=base,
                           action=(Literal[action.name], Field(description=action.title)),
                           args=_args_field(action))
        members.append(Annotated[cls, Tag(action.name)])
    names = ", ".join(a.name for a in actions)
    return Annotated[Union[tuple(members)], Discriminator(
        _tag, custom_error_type="invalid_action", custom_error_message=f"`action` must be one of: {names}")]


Guard = _union(GuardBase, [a for a in ACTIONS.values() if a.read_only], "Guard")



_ON_FAILURE = re.compile(r"^(abort|continue|rollback|escalate|goto:[A-Za-z0-9][A-Za-z0-9._-]*)$")


class StepBase(Model):
    id: Name = Field(description="unique in the runbook; the approve command and the journal use it")
    title: str = Field(min_length=1)
    text: str = Field("", description="what a person reads: why, what to look at, what to do by hand")
    modes: list[Mode] | None = Field(None, description="run only in these modes (default: every mode of its list)")
    host: Name | None = Field(None, description="shell, files.restore: where it runs (default local)")
    guard: Guard | None = Field(None, description="a read-only check that must hold first")
    timeout: Duration = Field(timedelta(minutes=5), description="for one attempt")
    retries: int = Field(0, ge=0, le=20)
    retry_delay: Duration = Field(timedelta(seconds=5))
    on_failure: str = Field("abort", description="abort | continue | rollback | escalate | goto:STEP")
    approval: Approval | None = None
    milestone: Literal["fenced", "promoted", "writable", "restored", "verified"] | None = Field(
        None, description="record this milestone when the step succeeds")

    @field_validator("on_failure")
    @classmethod
    def _on_failure(cls, value: str) -> str:
        if not _ON_FAILURE.match(value):
            raise ValueError(f"{value!r}: write abort, continue, rollback, escalate or goto:STEP-ID")
        return value

    @property
    def goto(self) -> str | None:
        return self.on_failure[5:] if self.on_failure.startswith("goto:") else None


Step = _union(StepBase, list(ACTIONS.values()), "Step")


class DrBranch(Model):
    """What runs when every standby is lost: bring up a DR node from the repository."""

    auto_escalate: bool = Field(False, description="run it without asking when failover finds no standby")
    approval: Approval = Field(Approval(timeout=timedelta(minutes=30), default="reject"),
                               description="the question asked before escalating (unless auto_escalate)")
    steps: list[Step] = Field(min_length=1)


class Runbook(Model):
    id: Name
    title: str = Field(min_length=1)
    owners: list[str] = Field(min_length=1, description="who maintains it and is called when it runs")
    summary: str = Field(min_length=1, description="when to use it, what it does, the risks")
    topology: Topology
    objectives: Objectives = Objectives()
    modes: list[Mode] = Field(min_length=1)
    notify: Notify = Notify()
    hooks: RunbookHooks = RunbookHooks()
    lease: Duration = Field(timedelta(seconds=60), description="the lease on the topology: renewed while a "
                            "run acts, taken over only after it expired")
    steps: list[Step] = Field(default_factory=list, description="switchover and failover, in order")
    rollback: list[Step] = Field(default_factory=list, description="run by a step with on_failure: rollback")
    dr_branch: DrBranch | None = None

    @model_validator(mode="after")
    def _modes_have_steps(self) -> "Runbook":
        if any(m in MAIN_MODES for m in self.modes) and not self.steps:
            raise ValueError("modes switchover/failover need `steps:`")
        if any(m in DR_MODES for m in self.modes) and self.dr_branch is None:
            raise ValueError("modes dr-activate/drill need a `dr_branch:`")
        return self

    @property
    def lease_name(self) -> str:
        return self.topology.name or self.id

    def branch(self, name: str) -> list:
        return {"main": self.steps, "dr": self.dr_branch.steps if self.dr_branch else [],
                "rollback": self.rollback}[name]

    def step(self, step_id: str):
        for name in ("main", "dr", "rollback"):
            for step in self.branch(name):
                if step.id == step_id:
                    return name, step
        return None, None


class RunbookDocument(Model):
    """A runbook file: one `runbook:` mapping."""

    runbook: Runbook


def step_modes(step, branch: str, runbook: Runbook) -> list[str]:
    """The modes a step runs in."""
    own = {"main": MAIN_MODES, "dr": DR_MODES, "rollback": ROLLBACK_MODES}[branch]
    return [m for m in (step.modes or own) if m in runbook.modes or (m == "dr-activate" and "failover" in
                                                                        runbook.modes)]
