"""`drorch binlog-archive`: copy a MariaDB server's closed binlogs into the repository."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, policy_option
from drorch.cli.render import emit_json, human_bytes, say
from drorch.errors import UsageError
from drorch.factory import make_source, open_repository, source_policy


@click.command("binlog-archive")
@policy_option
@click.option("--source", required=True, metavar="NAME", help="a mariadb source")
@click.option("--flush", is_flag=True, help="close the current binlog first (FLUSH BINARY LOGS)")
@json_option
def binlog_archive(policy_path, source: str, flush: bool, as_json: bool) -> None:
    """Archive the closed binlogs the repository lacks (point-in-time restore needs them)."""
    from drorch.engine import binlog

    policy = load(policy_path)
    model = source_policy(policy, source)
    if model.kind != "mariadb" or model.mode != "physical":
        raise UsageError(f"source {source} is not a physical mariadb source")
    repo = open_repository(policy, model.repository, create=True)
    done = binlog.archive_closed(repo, make_source(policy, source), flush=flush)
    if as_json:
        emit_json([{"name": a.name, "size": a.size, "stored": a.stored} for a in done])
        return
    stored = [a for a in done if a.stored]
    say(f"{source}: {len(stored)} binlog(s) archived ({human_bytes(sum(a.size for a in stored))}), "
        f"{len(done) - len(stored)} already there")


def register(cli: click.Group) -> None:
    cli.add_command(binlog_archive)
