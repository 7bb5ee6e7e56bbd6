"""`drorch copy`."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, policy_option, source_option
from drorch.cli.render import emit_json, human_bytes, progress_shown, say
from drorch.engine.copy import run_copy
from drorch.engine.progress import Progress
from drorch.errors import UsageError
from drorch.factory import copy_targets, open_repository, source_policy


def _sources(policy, source: str | None, to: str | None) -> list[str]:
    if source:
        source_policy(policy, source)
        return [source]
    names = sorted(n for n, s in policy.sources.items() if s.copy_to or (to and s.repository != to))
    if not names:
        raise UsageError("no source of this policy has `copy_to` repositories",
                         "say which with --source NAME --to REPOSITORY, or add `copy_to` to a source")
    return names


@click.command("copy")
@policy_option
@source_option
@click.option("--to", "to", metavar="REPOSITORY", help="copy to this repository (default: the source's copy_to)")
@json_option
def copy(policy_path, source: str | None, to: str | None, as_json: bool) -> None:
    """Copy committed backups a repository lacks into it (parents first, manifest last)."""
    policy = load(policy_path)
    results = []
    for name in _sources(policy, source, to):
        src = open_repository(policy, source_policy(policy, name).repository)
        for target in copy_targets(policy, name, to):
            dst = open_repository(policy, target, create=True)
            progress = Progress()
            start = time.monotonic()
            with progress_shown(progress, f"copy {name} to {target}"):
                result = run_copy(src, dst, name, progress=progress)
            results.append({**asdict(result), "repository": target, "seconds": round(time.monotonic() - start, 3)})
            if not as_json:
                _say(result, target, time.monotonic() - start)
    if as_json:
        emit_json(results)


def _say(result, target: str, seconds: float) -> None:
    if not result.copied:
        say(f"{target} already holds all {len(result.present)} backup(s) of {result.source}: nothing copied")
        return
    say(f"copied {len(result.copied)} backup(s) of {result.source} to {target} ({result.target}): "
        f"{human_bytes(result.read_bytes)} read, {human_bytes(result.written_bytes)} written, "
        f"{result.blobs} blobs checked, {seconds:.1f}s")
    for label in result.copied:
        say(f"  {label}")


def register(cli: click.Group) -> None:
    cli.add_command(copy)
