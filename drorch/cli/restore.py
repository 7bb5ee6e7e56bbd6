"""`drorch restore`."""

from __future__ import annotations

import os
from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, pick_source, policy_option, repository_option, source_option
from drorch.cli.render import emit_json, human_bytes, progress_shown, say
from drorch.engine.progress import Progress
from drorch.engine.restore import run_restore
from drorch.engine.selection import choose_backup
from drorch.errors import UsageError
from drorch.factory import make_host, make_source, open_repository, repository_name
from drorch.repo.catalog import Catalog
from drorch.sources.base import RestoreOptions
from drorch.timefmt import parse_iso


@click.command("restore")
@policy_option
@source_option
@repository_option
@click.option("--target", required=True, type=click.Path(), help="directory to restore into (created if missing)")
@click.option("--target-host", "target_host", metavar="HOST", default="local", show_default=True,
              help="restore onto this host (a name from `hosts:`) over SSH")
@click.option("--backup", "label", metavar="LABEL", help="this backup (default: the latest)")
@click.option("--time", "moment", metavar="T", help="the newest backup finished at or before T (ISO 8601)")
@click.option("--include", multiple=True, metavar="GLOB", help="restore only matching paths (repeatable)")
@click.option("--force", is_flag=True, help="overwrite files in a non-empty target")
@click.option("--delta", is_flag=True, help="rewrite only what differs and remove what is not in the backup")
@json_option
def restore(policy_path, source, repository, target, target_host, label, moment, include, force, delta,
            as_json) -> None:
    """Restore a backup (files land at TARGET/<original absolute path>)."""
    policy = load(policy_path)
    name = pick_source(policy, source)
    repo = open_repository(policy, repository_name(policy, name, repository))
    manifest = choose_backup(Catalog(repo), name, label, parse_iso(moment) if moment else None)
    if target_host != "local" and not target.startswith("/"):
        raise UsageError(f"--target {target} must be an absolute path on host {target_host}")
    host = make_host(policy, target_host)
    target = os.path.abspath(target) if target_host == "local" else os.path.normpath(target)
    options = RestoreOptions(target=target, force=force, delta=delta, include=list(include))
    progress = Progress()
    with progress_shown(progress, f"restore {manifest.label}"):
        result = run_restore(repo, make_source(policy, name), manifest, options, host, progress=progress)
    if as_json:
        emit_json(asdict(result))
        return
    where = options.target if target_host == "local" else f"{target_host}:{options.target}"
    say(f"restored {manifest.type} backup {manifest.label} of {name} into {where}: "
        f"{result.files} files written ({human_bytes(result.bytes_written)}) in {result.seconds:.1f}s")
    if delta:
        say(f"  delta: {result.unchanged_files} files already right, {result.removed} removed")


def register(cli: click.Group) -> None:
    cli.add_command(restore)
