"""`${role.field}` placeholders in runbook texts (commands, SQL, URLs, messages).

A placeholder names a role (primary, candidate, new_primary, dr), a node of the
topology, or a run value (run, mode, runbook).  Roles are filled when the run
has chosen its nodes; render.py prints them as they are written.
"""

from __future__ import annotations

import re
from typing import Callable

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+?)(?:\.(name|host|address|port|pgdata|datadir|bin_dir|os_user|conninfo))?\}")
NODE_FIELDS = ("name", "host", "address", "port", "pgdata", "datadir", "bin_dir", "os_user", "conninfo")
RUN_VALUES = ("run", "mode", "runbook")
ROLES = ("primary", "candidate", "new_primary", "dr")


def names_in(text: str) -> list[tuple[str, str | None]]:
    """(name, field) of every placeholder in text."""
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]


def problems(text: str, nodes: set[str]) -> list[str]:
    """What is wrong with the placeholders of text (unknown names, fields on run values)."""
    out = []
    for name, field in names_in(text):
        if name in RUN_VALUES:
            if field:
                out.append(f"${{{name}.{field}}}: {name} has no fields; write ${{{name}}}")
        elif name not in ROLES and name not in nodes:
            known = ", ".join([*ROLES, *sorted(nodes), *RUN_VALUES])
            out.append(f"${{{name}}}: no role or node named {name!r} (known: {known})")
    return out


def expand(text: str, value: Callable[[str, str | None], str]) -> str:
    """text with every placeholder replaced by value(name, field)."""
    return PLACEHOLDER.sub(lambda m: str(value(m.group(1), m.group(2))), text)
