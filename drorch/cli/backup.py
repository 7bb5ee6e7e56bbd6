"""`drorch backup`."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, pick_source, policy_option, source_option
from drorch.cli.render import emit_json, human_bytes, progress_shown, say
from drorch.engine.backup import run_backup
from drorch.engine.progress import Progress
from drorch.factory import make_hooks, make_source, open_repository, source_policy


@click.command("backup")
@policy_option
@source_option
@click.option("--type", "backup_type", type=click.Choice(["full", "diff", "incr"]), default="incr",
              show_default=True, help="incr or diff without a full to build on runs as a full")
@click.option("--checksum", is_flag=True, help="re-read and re-hash every file, not only changed ones")
@click.option("--no-hooks", is_flag=True, help="do not run the source's hook scripts (hooks/README.md)")
@json_option
def backup(policy_path, source: str | None, backup_type: str, checksum: bool, no_hooks: bool,
           as_json: bool) -> None:
    """Back up a source into its repository."""
    policy = load(policy_path)
    name = pick_source(policy, source)
    src = make_source(policy, name)
    getattr(src, "connect", lambda: None)()  # before a new repository is initialised
    repo = open_repository(policy, source_policy(policy, name).repository, create=True)
    if repo.created and not as_json:
        say(f"initialised a new repository at {repo.location}")
    progress = Progress()
    start = time.monotonic()
    with progress_shown(progress, f"backup {name}"):
        result = run_backup(repo, src, backup_type, checksum=checksum, progress=progress,
                            hooks=None if no_hooks else make_hooks(policy, name))
    if as_json:
        emit_json({**asdict(result), "seconds": round(time.monotonic() - start, 3)})
        return
    stats = result.stats
    say(f"backup {result.label} of {name} committed ({result.type}"
        + (f", parent {result.parent}" if result.parent else "") + ")")
    if result.type != result.requested_type:
        say(f"  note: {result.why}")
    say(f"  {stats['files']} files, {human_bytes(stats['size_bytes'])} described, "
        f"{human_bytes(stats['stored_bytes'])} stored; {stats['new_files']} new, "
        f"{stats['changed_files']} changed, {stats['unchanged_files']} unchanged; "
        f"{time.monotonic() - start:.1f}s")
    if result.warnings:
        say(f"  {len(result.warnings)} warning(s) (see above)")


def register(cli: click.Group) -> None:
    cli.add_command(backup)
