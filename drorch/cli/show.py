"""`drorch show`."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, pick_source, policy_option, repository_option, source_option
from drorch.cli.listing import backup_row, verified_text
from drorch.cli.render import emit_json, human_bytes, say, table
from drorch.factory import open_repository, repository_name
from drorch.repo import verifications
from drorch.repo.catalog import Catalog
from drorch.repo.manifest import entry_to_json, read_entries


@click.command("show")
@policy_option
@source_option
@repository_option
@click.option("--backup", "label", required=True, metavar="LABEL", help="the backup's label")
@click.option("--files", "with_files", is_flag=True, help="also list every entry")
@json_option
def show(policy_path, source: str | None, repository: str | None, label: str, with_files: bool,
         as_json: bool) -> None:
    """Show one backup: its manifest, and with --files its entries."""
    policy = load(policy_path)
    name = pick_source(policy, source)
    repo = open_repository(policy, repository_name(policy, name, repository))
    catalog = Catalog(repo)
    manifest = catalog.manifest(name, label)
    manifest.pinned = label in catalog.pins(name)
    records = verifications.refs(repo, name, label)
    manifest.verification = records[-1].summary() if records else None
    entries = read_entries(repo, manifest) if with_files else None
    if as_json:
        out = {**backup_row(manifest, name), "manifest": manifest.data,
               "verifications": [{**r.summary(), "record": r.key} for r in records]}
        if entries is not None:
            out["entries"] = [entry_to_json(e) for e in entries]
        emit_json(out)
        return
    data, stats = manifest.data, manifest.stats
    for key, value in [("label", label), ("source", name), ("type", manifest.type),
                       ("why", data.get("why")), ("parent", manifest.parent or "-"),
                       ("chain", " <- ".join(manifest.chain) or "-"), ("pinned", manifest.pinned),
                       ("started", manifest.started), ("finished", manifest.finished),
                       ("host", data.get("host")), ("drorch", data.get("drorch_version")),
                       ("files", stats.get("files")), ("directories", stats.get("dirs")),
                       ("size", human_bytes(stats.get("size_bytes"))),
                       ("stored", human_bytes(stats.get("stored_bytes"))),
                       ("new/changed/unchanged", f"{stats.get('new_files')}/{stats.get('changed_files')}/"
                                                 f"{stats.get('unchanged_files')}"),
                       ("packs", len(data.get("packs") or [])),
                       ("verified", verified_text(manifest.verification)),
                       *source_fact_lines(manifest.source_facts)]:
        say(f"{key:>22}: {value}")
    for warning in data.get("warnings") or []:
        say(f"{'warning':>22}: {warning}")
    if entries is not None:
        table(["TYPE", "MODE", "OWNER", "SIZE", "MTIME_NS", "PATH"],
              [[e.type, oct(e.mode), f"{e.user or e.uid}:{e.group or e.gid}", e.size, e.mtime_ns,
                "/" + e.path + (f" -> {e.target}" if e.target else "")] for e in entries])


def source_fact_lines(facts: dict) -> list[tuple[str, str]]:
    """The positions a backup restores to (MariaDB: binlog, GTID; from a replica: the primary's)."""
    lines = []
    if facts.get("binlog_file"):
        gtid = f" (GTID {facts['gtid']})" if facts.get("gtid") else ""
        lines.append(("binlog position", f"{facts['binlog_file']}:{facts.get('binlog_position')}{gtid}"))
    if facts.get("backup_from") not in (None, "primary"):
        of = f" of {facts['replica_of']}" if facts.get("replica_of") else ""
        lines.append(("taken from", f"{facts['backup_from']}{of}"))
    primary = [f"GTID {facts['primary_gtid']}"] if facts.get("primary_gtid") else []
    if facts.get("primary_binlog_file"):
        primary.append(f"{facts['primary_binlog_file']}:{facts.get('primary_binlog_position')}")
    if primary:
        lines.append(("primary position", ", ".join(primary)))
    elif facts.get("backup_from") == "replica":
        lines.append(("primary position", "not recorded"))
    return lines


def register(cli: click.Group) -> None:
    cli.add_command(show)
