"""`drorch wal-push` / `drorch wal-get`: PostgreSQL's archive_command and restore_command.

archive_command = 'drorch wal-push --policy P --source S %p'
restore_command = 'drorch wal-get --policy P --source S %f %p'   (written by `drorch restore`)
"""

from __future__ import annotations

import os

import click

from drorch.cli.common import load, policy_option
from drorch.errors import DrorchError, NotFoundError, UsageError
from drorch.factory import open_repository, source_policy


def _postgres(policy, source: str):
    model = source_policy(policy, source)
    if model.kind != "postgres":
        raise UsageError(f"source {source} is a {model.kind} source; WAL belongs to postgres sources")
    return model


@click.command("wal-push")
@policy_option
@click.option("--source", required=True, metavar="NAME", help="the postgres source this WAL belongs to")
@click.argument("path")
def wal_push(policy_path, source: str, path: str) -> None:
    """Archive one WAL file (PostgreSQL's %p, relative to the data directory)."""
    from drorch.engine import wal

    policy = load(policy_path)
    model = _postgres(policy, source)
    repo = open_repository(policy, model.repository, create=True)
    wal.push(repo, source, os.path.abspath(path))


@click.command("wal-get")
@policy_option
@click.option("--source", required=True, metavar="NAME", help="the postgres source the WAL belongs to")
@click.argument("name")
@click.argument("dest")
def wal_get(policy_path, source: str, name: str, dest: str) -> None:
    """Fetch one archived WAL file NAME (%f) to DEST (%p).  Exit 1 when it is not archived."""
    from drorch.engine import wal

    policy = load(policy_path)
    model = _postgres(policy, source)
    repo = open_repository(policy, model.repository)
    try:
        wal.get(repo, source, name, dest)
    except NotFoundError:  # normal at the end of the archive: PostgreSQL asks until one is missing
        raise DrorchError(f"{name} is not in the archive of {source}") from None


def register(cli: click.Group) -> None:
    cli.add_command(wal_push)
    cli.add_command(wal_get)
