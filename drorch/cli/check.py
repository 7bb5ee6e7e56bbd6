"""`drorch check`: is everything in place for backups to work, and do they meet
the policy's objectives?  Exit 0 when no item failed (warnings included), 1
otherwise; what the policy does not configure is reported as skipped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, policy_option, source_option
from drorch.cli.render import emit_json, table
from drorch.engine.health import (Item, free_space_item, host_items, mariadb_items, pg_connection_item,
                                  postgres_items, repository_items)
from drorch.engine.health_backups import backup_items
from drorch.engine.hooks import hook_items
from drorch.engine.verify_restore import sandbox_base
from drorch.errors import DrorchError
from drorch.factory import make_hooks, make_host, make_source, open_repository, pg_params, source_policy, \
    storage_for

MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def collect(policy, only: str | None, probe: bool, min_free: float = 10.0) -> list[Item]:
    items = [Item("policy", "ok", f"{len(policy.files)} file(s), {len(policy.sources)} sources")]
    names = [only] if only else sorted(policy.sources)
    usable = {}
    for repo_name in sorted({source_policy(policy, n).repository for n in names}):
        model = policy.repositories[repo_name]
        found = repository_items(repo_name, storage_for(policy, repo_name),
                                 lambda r=repo_name: open_repository(policy, r), model.encryption is not None)
        items += found
        usable[repo_name] = all(i.status in ("ok", "skip") for i in found)
        if model.type == "posix":
            items.append(free_space_item(f"repository {repo_name}", model.path, min_free))
    items += host_items(_hosts(policy, names), lambda name: make_host(policy, name))
    for base in sorted({sandbox_base(source_policy(policy, n).verify.sandbox) for n in names
                        if source_policy(policy, n).verify.host == "local"}):
        items.append(free_space_item(f"backup host {base}", base, min_free))
    for name in names:
        items += _source_items(policy, name, probe, usable)
    for name in names:
        items += hook_items(name, make_hooks(policy, name))
    return items


def _hosts(policy, names) -> dict[str, list[str]]:
    hosts = defaultdict(list)
    for name in names:
        model = source_policy(policy, name)
        hosts[model.host].append(name)
        standby = getattr(model, "standby", None)
        if standby is not None and standby.host != model.host:
            hosts[standby.host].append(f"{name} (standby)")
        if model.verify.host != model.host:
            hosts[model.verify.host].append(f"{name} (restore verification)")
    return hosts


def _source_items(policy, name: str, probe: bool, usable: dict) -> list[Item]:
    model = source_policy(policy, name)
    items = []
    physical = model.kind == "postgres" and model.mode == "physical"
    if physical:
        opener = lambda m=model: open_repository(policy, m.repository)  # noqa: E731
        try:
            params = pg_params(model.connection)
            items += postgres_items(name, params, model.archive.timeout.total_seconds(), opener, probe)
        except DrorchError as exc:
            items.append(Item(f"source {name}: connection", "fail", exc.message, exc.hint))
    elif model.kind == "postgres":
        try:
            items.append(pg_connection_item(name, pg_params(model.connection)))
        except DrorchError as exc:
            items.append(Item(f"source {name}: connection", "fail", exc.message, exc.hint))
    elif model.kind == "mariadb" and model.mode == "physical":
        items += mariadb_items(make_source(policy, name), lambda m=model: open_repository(policy, m.repository))
    if not usable.get(model.repository):
        return items + [Item(f"source {name}: backups", "skip", f"repository {model.repository} is not usable "
                                                                "(see above)")]
    try:
        repo = open_repository(policy, model.repository)
        items += backup_items(name, repo, rpo=model.objectives.rpo, max_age=model.verify.max_age,
                              rto=model.objectives.rto, wal_archive=physical)
    except DrorchError as exc:
        items.append(Item(f"source {name}: backups", "fail", exc.message, exc.hint))
    return items


@click.command("check")
@policy_option
@source_option
@click.option("--archive-probe", is_flag=True, help="postgres: switch WAL and wait for it in the repository")
@click.option("--min-free", type=click.FloatRange(0, 100), default=10.0, show_default=True, metavar="PERCENT",
              help="warn when a repository's or the backup host's file system has less free space")
@json_option
def check(policy_path, source, archive_probe, min_free, as_json) -> None:
    """Check policies, repositories, hosts and sources against the policy's objectives; say what to fix."""
    policy = load(policy_path)
    items = collect(policy, source, archive_probe, min_free)
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
