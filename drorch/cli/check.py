"""`drorch check`: is everything in place for backups to work?  Exit 0 when no
item failed (warnings included), 1 otherwise."""

from __future__ import annotations

from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, policy_option, source_option
from drorch.cli.render import emit_json, table
from drorch.engine.health import Item, mariadb_items, postgres_items, repository_item
from drorch.engine.hooks import hook_items
from drorch.errors import DrorchError
from drorch.factory import make_hooks, make_source, open_repository, pg_params, source_policy

MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def collect(policy, only: str | None, probe: bool) -> list[Item]:
    items = [Item("policy", "ok", f"{len(policy.files)} file(s), {len(policy.sources)} sources")]
    names = [only] if only else sorted(policy.sources)
    for repo_name in sorted({source_policy(policy, n).repository for n in names}):
        items.append(repository_item(repo_name, lambda r=repo_name: open_repository(policy, r)))
    for name in names:
        model = source_policy(policy, name)
        if model.kind == "postgres" and model.mode == "physical":
            opener = lambda m=model: open_repository(policy, m.repository)  # noqa: E731
            try:
                params = pg_params(model.connection)
            except DrorchError as exc:
                items.append(Item(f"source {name}: connection", "fail", exc.message, exc.hint))
                continue
            items += postgres_items(name, params, model.archive.timeout.total_seconds(), opener, probe)
        elif model.kind == "mariadb" and model.mode == "physical":
            items += mariadb_items(make_source(policy, name), lambda m=model: open_repository(policy, m.repository))
        else:
            items.append(Item(f"source {name}", "skip", f"no checks for {model.kind} sources yet"))
    for name in names:
        items += hook_items(name, make_hooks(policy, name))
    return items


@click.command("check")
@policy_option
@source_option
@click.option("--archive-probe", is_flag=True, help="postgres: switch WAL and wait for it in the repository")
@json_option
def check(policy_path, source, archive_probe, as_json) -> None:
    """Check policies, repositories and sources; say what to fix."""
    policy = load(policy_path)
    items = collect(policy, source, archive_probe)
    failed = [i for i in items if i.status == "fail"]
    if as_json:
        emit_json({"ok": not failed, "items": [asdict(i) for i in items]})
    else:
        table(["STATUS", "ITEM", "DETAIL"], [[MARK[i.status], i.name, i.message] for i in items])
        for item in items:
            if item.hint and item.status in ("fail", "warn"):
                click.echo(f"  {item.name}: {item.hint}")
    if failed:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(check)
