"""`drorch list`."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, policy_option, repository_option, source_option
from drorch.cli.render import emit_json, human_bytes, table
from drorch.factory import open_repository, repository_name, source_policy
from drorch.repo import verifications
from drorch.repo.catalog import Catalog


def backup_row(manifest, source: str) -> dict:
    stats = manifest.stats
    return {"label": manifest.label, "source": source, "type": manifest.type,
            "parent": manifest.parent, "status": "ok", "started": manifest.started,
            "finished": manifest.finished, "files": stats.get("files"),
            "size_bytes": stats.get("size_bytes"), "stored_bytes": stats.get("stored_bytes"),
            "pinned": manifest.pinned, "verification": manifest.verification}


def run_row(run, source: str) -> dict:
    data = run.data
    return {"label": run.label, "source": source, "type": data.get("type"),
            "parent": data.get("parent"), "status": run.status, "started": data.get("started"),
            "finished": data.get("failed"), "files": None, "size_bytes": None, "stored_bytes": None,
            "pinned": False, "verification": None, "phase": data.get("phase"),
            "error": data.get("error"), "operation": data.get("operation", "backup")}


def collect(policy, source: str | None, repository: str | None, show_all: bool) -> list[dict]:
    if source:
        source_policy(policy, source)
    names = [source] if source else None
    rows: list[dict] = []
    repos = [repository_name(policy, source, repository)] if (source or repository) else \
        sorted({s.repository for s in policy.sources.values()} or policy.repositories)
    for repo_name in repos:
        repo = open_repository(policy, repo_name)
        catalog = Catalog(repo)
        for name in names or catalog.sources():
            verified = verifications.last_by_label(repo, name)
            for manifest in catalog.backups(name):
                if manifest.label in verified:
                    manifest.verification = verified[manifest.label].summary()
                rows.append(backup_row(manifest, name))
            if show_all:
                rows += [run_row(r, name) for r in catalog.runs(name)]
    rows.sort(key=lambda r: (r["source"], r["label"]))
    return rows


@click.command("list")
@policy_option
@source_option
@repository_option
@click.option("--all", "show_all", is_flag=True, help="also runs that did not commit (failed, incomplete)")
@json_option
def list_cmd(policy_path, source: str | None, repository: str | None, show_all: bool, as_json: bool) -> None:
    """List backups (committed ones; --all adds failed and incomplete runs)."""
    policy = load(policy_path)
    rows = collect(policy, source, repository, show_all)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no backups")
        return
    table(["SOURCE", "LABEL", "TYPE", "STATUS", "PARENT", "FINISHED", "FILES", "SIZE", "STORED", "VERIFIED"],
          [[r["source"], r["label"] + (" (pinned)" if r["pinned"] else ""), r["type"],
            r["status"] + (" copy" if r.get("operation") == "copy" else "")
            + (f" in {r['phase']}: {r['error']}" if r.get("error") else ""),
            r["parent"] or "-", r["finished"] or "-", r["files"], human_bytes(r["size_bytes"]),
            human_bytes(r["stored_bytes"]), verified_text(r["verification"])] for r in rows])


def verified_text(verification: dict | None) -> str:
    """'restore ok 2h ago', 'read FAILED 5m ago' or '-'."""
    if not verification:
        return "-"
    outcome = "ok" if verification["result"] == "passed" else "FAILED"
    return f"{verification['level']} {outcome} {rough_age(verification['age_seconds'])} ago"


def rough_age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def register(cli: click.Group) -> None:
    cli.add_command(list_cmd)
