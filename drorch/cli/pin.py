"""`drorch pin` / `drorch unpin`: keep a backup (and its chain) whatever retention says."""

from __future__ import annotations

import getpass
import socket

import click

from drorch.cli.common import load, pick_source, policy_option, source_option
from drorch.cli.render import say
from drorch.factory import open_repository, source_policy
from drorch.repo import layout
from drorch.repo.catalog import Catalog
from drorch.timefmt import iso, utcnow


def _open(policy_path, source):
    policy = load(policy_path)
    name = pick_source(policy, source)
    return name, open_repository(policy, source_policy(policy, name).repository)


@click.command("pin")
@policy_option
@source_option
@click.option("--backup", "label", required=True, metavar="LABEL")
@click.option("--reason", default="", help="why it is kept (shown by show/expire)")
def pin(policy_path, source, label, reason) -> None:
    """Pin a backup: expire keeps it and everything it depends on."""
    name, repo = _open(policy_path, source)
    Catalog(repo).manifest(name, label)  # must exist
    repo.put_json(layout.pin_key(name, label), {"pinned": iso(utcnow()), "reason": reason,
                                                "by": f"{getpass.getuser()}@{socket.gethostname()}"})
    say(f"pinned {name} {label}")


@click.command("unpin")
@policy_option
@source_option
@click.option("--backup", "label", required=True, metavar="LABEL")
def unpin(policy_path, source, label) -> None:
    """Unpin a backup: retention applies to it again."""
    name, repo = _open(policy_path, source)
    Catalog(repo).manifest(name, label)
    repo.storage.delete(layout.pin_key(name, label))
    say(f"unpinned {name} {label}")


def register(cli: click.Group) -> None:
    cli.add_command(pin)
    cli.add_command(unpin)
