"""`drorch repo init|passwd`."""

from __future__ import annotations

import sys

import click

from drorch.cli.common import json_option, load, policy_option, repository_option
from drorch.cli.render import emit_json, say
from drorch.errors import UsageError
from drorch.factory import open_repository, repository_name
from drorch.policy.types import Secret


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


def new_passphrase(reference: str | None) -> str:
    """The new passphrase: by reference (env:NAME, file:/path), or asked on a terminal."""
    if reference:
        ref = reference.strip()
        if not ref.startswith("${"):
            ref = "${" + ref + "}"
        try:
            return Secret.parse(ref).resolve()
        except ValueError:
            # not echoed: what was given may be the passphrase itself
            raise UsageError("--new-passphrase-from takes a reference: give env:NAME or file:/path") from None
    if not sys.stdin.isatty():
        raise UsageError("no new passphrase: give --new-passphrase-from env:NAME or file:/path "
                         "(or run on a terminal to be asked)")
    return click.prompt("new passphrase", hide_input=True, confirmation_prompt=True)


@repo_group.command("passwd")
@policy_option
@repository_option
@click.option("--new-passphrase-from", "reference", metavar="env:NAME|file:PATH",
              help="where to read the new passphrase (default: ask on the terminal)")
@json_option
def passwd(policy_path, repository: str | None, reference: str | None, as_json: bool) -> None:
    """Change an encrypted repository's passphrase (re-wraps its key; no data is rewritten)."""
    policy = load(policy_path)
    name = repository_name(policy, None, repository)
    repo = open_repository(policy, name)  # unlocks with the current passphrase from the policy
    repo.require_encrypted()  # before asking for a new passphrase
    repo.change_passphrase(new_passphrase(reference))
    ref = policy.repositories[name].encryption.passphrase.ref
    if as_json:
        emit_json({"repository": name, "location": repo.location, "id": repo.id, "changed": True})
        return
    say(f"changed the passphrase of repository {name} at {repo.location}; the old one no longer opens it")
    say(f"  now make the policy's secret {ref} give the new passphrase")


def register(cli: click.Group) -> None:
    cli.add_command(repo_group)
