"""`drorch repo init`."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, policy_option, repository_option
from drorch.cli.render import emit_json, say
from drorch.factory import open_repository, repository_name


@click.group("repo")
def repo_group() -> None:
    """Repository administration."""


@repo_group.command("init")
@policy_option
@repository_option
@json_option
def init(policy_path, repository: str | None, as_json: bool) -> None:
    """Create the repository (the first backup also does this)."""
    policy = load(policy_path)
    name = repository_name(policy, None, repository)
    repo = open_repository(policy, name, create=True)
    if as_json:
        emit_json({"repository": name, "location": repo.location, "id": repo.id, "created": repo.created})
    elif repo.created:
        say(f"initialised repository {name} at {repo.location} (id {repo.id})")
    else:
        say(f"repository {name} at {repo.location} already exists (id {repo.id}); nothing changed")


def register(cli: click.Group) -> None:
    cli.add_command(repo_group)
