"""The actions a runbook step can run, by name (one module per family)."""

from __future__ import annotations

from drorch.runbook.actions.approval import Approval
from drorch.runbook.actions.base import Action
from drorch.runbook.actions.checks import HttpCheck, SqlCheck, TcpCheck
from drorch.runbook.actions.files import FilesRestore
from drorch.runbook.actions.mdb_fence import MdbFence, MdbStart
from drorch.runbook.actions.mdb_promote import MdbPromote, MdbRepoint
from drorch.runbook.actions.mdb_restore import MdbRestore
from drorch.runbook.actions.mdb_status import MdbStatus, MdbWaitCaughtUp
from drorch.runbook.actions.notify import Notify
from drorch.runbook.actions.pg_fence import PgFence, PgStart
from drorch.runbook.actions.pg_promote import PgPromote, PgRepoint
from drorch.runbook.actions.pg_rejoin import PgRebuild, PgRewind
from drorch.runbook.actions.pg_restore import PgRestore
from drorch.runbook.actions.pg_status import PgStatus, PgWaitCaughtUp
from drorch.runbook.actions.shell import Shell
from drorch.runbook.actions.wait import Wait

ACTIONS: dict[str, Action] = {action.name: action for action in (
    Shell(), PgStatus(), PgWaitCaughtUp(), PgFence(), PgStart(), PgPromote(), PgRepoint(), PgRewind(), PgRebuild(),
    PgRestore(), MdbStatus(), MdbWaitCaughtUp(), MdbFence(), MdbStart(), MdbPromote(), MdbRepoint(), MdbRestore(),
    SqlCheck(), TcpCheck(), HttpCheck(), Wait(), Approval(), Notify(), FilesRestore())}

#: actions that change production servers: a drill never runs them
PRODUCTION_ACTIONS = ("pg.fence", "pg.start", "pg.promote", "pg.repoint", "pg.rewind", "pg.rebuild",
                      "mariadb.fence", "mariadb.start", "mariadb.promote", "mariadb.repoint")

#: the engine whose servers an action family acts on (`pg.*` on postgres topologies, ...)
ENGINE_PREFIXES = {"pg.": "postgres", "mariadb.": "mariadb"}


def action_engine(name: str) -> str | None:
    return next((engine for prefix, engine in ENGINE_PREFIXES.items() if name.startswith(prefix)), None)
