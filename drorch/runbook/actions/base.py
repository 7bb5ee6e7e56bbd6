"""What every runbook action offers: its arguments (a pydantic model checked
when the runbook is loaded), the commands a person would type to do it by hand
(for render), and run() against a context the runner gives it.

An action is read-only when it never changes a host or a server (plan mode
runs those, and only those; guards are read-only actions).  An action is
idempotent when running it again after the runner died in its middle is safe;
a non-idempotent one says, through already_done(), whether it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from drorch.errors import DrorchError
from drorch.policy.models import Model

#: what `node:` may name besides a node of the topology
NODE_ROLES = ("primary", "candidate", "new_primary", "dr")


@dataclass
class Outcome:
    ok: bool
    summary: str
    data: dict = field(default_factory=dict)
    output: str = ""  # the tail of what a command printed


class StepFailed(DrorchError):
    """An action could not do what its step asks (the runner applies on_failure)."""


@dataclass
class Manual:
    """One thing a person does when following the runbook by hand."""

    where: str  # "on db1 as postgres", "SQL on ${candidate}", ""
    kind: str  # shell | sql | http | note
    text: str


@dataclass
class NodeView:
    """How render and the journal show a node: real values for a named node,
    `${role.field}` placeholders for a role chosen at run time."""

    name: str
    host: str
    address: str
    port: str
    pgdata: str
    bin_dir: str
    os_user: str
    conninfo: str
    drill_pgdata: str = ""
    user: str = ""  # MariaDB: the user drorch connects as
    fence_file: str = ""  # MariaDB: the option file fencing writes

    def psql(self, sql: str, dbname: str | None = None) -> str:
        db = f" -d {dbname}" if dbname else ""
        quoted = sql.replace('"', '\\"')
        return f'psql -h {self.address} -p {self.port} -U postgres{db} -Atc "{quoted}"'

    def on(self) -> str:
        return f"on host {self.host} as {self.os_user}"


class Action:
    name: ClassVar[str]
    title: ClassVar[str]  # what it does, in a few words
    Args: ClassVar[type[Model]]
    read_only: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True
    uses_host: ClassVar[bool] = False  # the step's `host:` says where it runs

    def is_read_only(self, args: Any) -> bool:
        return self.read_only

    def is_idempotent(self, args: Any) -> bool:
        return self.idempotent

    def node_refs(self, args: Any) -> list[str]:
        """Nodes and roles the arguments name (checked against the topology)."""
        refs: list[str] = []
        for key, info in type(args).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("node"):
                value = getattr(args, key)
                refs += value if isinstance(value, list) else [value] if value else []
        return refs

    def texts(self, args: Any) -> list[str]:
        """The argument texts that may hold ${...} placeholders."""
        return [v for k, v in args if isinstance(v, str) and k in ("command", "query", "url", "message",
                                                                    "prompt", "target", "host")]

    def describe(self, args: Any, view) -> list[Manual]:
        raise NotImplementedError

    def run(self, args: Any, ctx) -> Outcome:
        raise NotImplementedError

    def already_done(self, args: Any, ctx) -> bool | None:
        """After a crash in the middle of a non-idempotent step: True when its effect
        is observed, False when it surely did not happen, None when drorch cannot tell."""
        return None


def node_field(default, description: str):
    """A pydantic Field naming a node or a role, or (a list default) several of them;
    checked against the topology when the runbook is loaded."""
    from pydantic import Field

    if isinstance(default, list):
        return Field(default_factory=lambda: list(default), description=description,
                     json_schema_extra={"node": True})
    return Field(default, description=description, json_schema_extra={"node": True})


def tail(text: bytes | str, limit: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
