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


async_option = click.option("--async", "use_async", is_flag=True,
                            help="through a spool and a background worker (fast per-file start-up)")
spool_option = click.option("--spool", metavar="DIR", help="with --async: the spool directory")
timeout_option = click.option("--timeout", type=float, default=60.0, show_default=True,
                              help="with --async: how long to wait for the worker")


def _async(verb: str, policy_path, source, spool, timeout, args, prefetch=8) -> None:
    from drorch import walspool

    if not spool:
        raise UsageError("--async needs --spool DIR (a directory the PostgreSQL user may write)")
    code = walspool.run({"verb": verb, "policy": os.path.abspath(str(policy_path)), "source": source,
                         "spool": spool, "timeout": timeout, "prefetch": prefetch, "args": args})
    if code:
        raise SystemExit(code)


@click.command("wal-push")
@policy_option
@click.option("--source", required=True, metavar="NAME", help="the postgres source this WAL belongs to")
@async_option
@spool_option
@timeout_option
@click.argument("path")
def wal_push(policy_path, source: str, use_async: bool, spool: str | None, timeout: float, path: str) -> None:
    """Archive one WAL file (PostgreSQL's %p, relative to the data directory)."""
    from drorch.engine import wal

    if use_async:
        return _async("wal-push", policy_path, source, spool, timeout, [path])
    policy = load(policy_path)
    model = _postgres(policy, source)
    repo = open_repository(policy, model.repository, create=True)
    wal.push(repo, source, os.path.abspath(path))


@click.command("wal-get")
@policy_option
@click.option("--source", required=True, metavar="NAME", help="the postgres source the WAL belongs to")
@async_option
@spool_option
@timeout_option
@click.option("--prefetch", type=int, default=8, show_default=True, help="with --async: segments fetched ahead")
@click.argument("name")
@click.argument("dest")
def wal_get(policy_path, source: str, use_async: bool, spool: str | None, timeout: float, prefetch: int,
            name: str, dest: str) -> None:
    """Fetch one archived WAL file NAME (%f) to DEST (%p).  Exit 1 when it is not archived."""
    from drorch.engine import wal

    if use_async:
        return _async("wal-get", policy_path, source, spool, timeout, [name, dest], prefetch)
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
