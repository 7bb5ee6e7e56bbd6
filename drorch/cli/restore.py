"""`drorch restore`."""

from __future__ import annotations

import os
from dataclasses import asdict

import click

from drorch.cli.common import json_option, load, pick_source, policy_option, repository_option, source_option
from drorch.cli.render import emit_json, human_bytes, progress_shown, say
from drorch.engine.progress import Progress
from drorch.engine.restore import run_database_restore, run_restore
from drorch.engine.selection import choose_backup
from drorch.errors import UsageError
from drorch.factory import make_host, make_source, open_repository, repository_name, source_policy
from drorch.repo.catalog import Catalog
from drorch.sources.base import RestoreOptions
from drorch.timefmt import iso, parse_iso


@click.command("restore")
@policy_option
@source_option
@repository_option
@click.option("--target", type=click.Path(),
              help="files: directory to restore into; databases: the new data directory (created if missing)")
@click.option("--target-host", "target_host", metavar="HOST", default="local", show_default=True,
              help="restore onto this host (a name from `hosts:`) over SSH")
@click.option("--backup", "label", metavar="LABEL", help="this backup (default: the latest)")
@click.option("--time", "moment", metavar="T", help="files: the newest backup finished at or before T; "
              "databases: the newest backup consistent before T, replayed to T (ISO 8601)")
@click.option("--include", multiple=True, metavar="GLOB", help="restore only matching paths (repeatable)")
@click.option("--force", is_flag=True, help="overwrite files in a non-empty target")
@click.option("--delta", is_flag=True, help="rewrite only what differs and remove what is not in the backup")
@click.option("--lsn", help="postgres: recover to this LSN")
@click.option("--xid", help="postgres: recover to this transaction id")
@click.option("--name", "restore_point", help="postgres: recover to this named restore point")
@click.option("--immediate", is_flag=True, help="postgres: stop as soon as the backup is consistent "
              "(recovery target immediate)")
@click.option("--target-timeline", "timeline", help="postgres: latest, current or a timeline id")
@click.option("--target-exclusive", "exclusive", is_flag=True, help="postgres: stop just before the target")
@click.option("--target-action", "action", type=click.Choice(["promote", "pause", "shutdown"]),
              help="postgres: what the server does at the target (PostgreSQL's default: pause)")
@click.option("--standby", is_flag=True, help="postgres: write standby.signal (rebuild a standby)")
@click.option("--primary-conninfo", help="postgres with --standby: how the standby reaches its primary")
@click.option("--tablespace-map", multiple=True, metavar="OID=DIR",
              help="postgres: put tablespace OID in DIR (default: inside the target, or in place)")
@click.option("--archive-mode", type=click.Choice(["off", "preserve"]),
              help="postgres: `off` (default) keeps a restored copy from archiving; `preserve` keeps the setting")
@click.option("--position", metavar="FILE:POS", help="mariadb: replay binlogs up to this position")
@click.option("--gtid", help="mariadb: replay binlogs up to this GTID")
@click.option("--database", help="logical backups: restore this database into its server")
@click.option("--into", help="with --database: under this name (default: its own; it must not exist)")
@click.option("--table", help="with --database: only this table")
@json_option
def restore(policy_path, source, repository, target, target_host, label, moment, include, force, delta, as_json,
            database, into, table, **db_options) -> None:
    """Restore a backup.  Files land at TARGET/<original absolute path>; a database's
    data directory becomes TARGET."""
    policy = load(policy_path)
    name = pick_source(policy, source)
    kind = source_policy(policy, name).kind
    db_options = {k: v for k, v in db_options.items() if v}
    if kind == "files" and db_options:
        raise UsageError(f"--{next(iter(db_options)).replace('_', '-')} applies to database sources only")
    repo = open_repository(policy, repository_name(policy, name, repository))
    when = parse_iso(moment) if moment else None
    manifest = choose_backup(Catalog(repo), name, label, when, db_options.get("lsn"))
    if database or into or table:
        _restore_database(policy, name, repo, manifest, database, into, table, as_json)
        return
    if not target:
        raise UsageError("say where to restore with --target DIR (or --database NAME for a logical backup)")
    if kind == "postgres" and when:
        db_options["time"] = iso(when).replace("Z", "+00")
    elif kind == "mariadb" and when:
        db_options["time"] = when.strftime("%Y-%m-%d %H:%M:%S")  # UTC: mariadb-binlog runs with TZ=UTC
    if target_host != "local" and not target.startswith("/"):
        raise UsageError(f"--target {target} must be an absolute path on host {target_host}")
    host = make_host(policy, target_host)
    target = os.path.abspath(target) if target_host == "local" else os.path.normpath(target)
    options = RestoreOptions(target=target, force=force, delta=delta, include=list(include),
                             source_options=db_options)
    progress = Progress()
    with progress_shown(progress, f"restore {manifest.label}"):
        result = run_restore(repo, make_source(policy, name), manifest, options, host, progress=progress)
    if as_json:
        emit_json({**asdict(result), "recovery": db_options or None})
        return
    where = options.target if target_host == "local" else f"{target_host}:{options.target}"
    if kind == "mariadb":
        say(f"restored {manifest.type} backup {manifest.label} of {name} into {where}: {result.files} "
            f"backup(s) of its chain prepared in {result.seconds:.1f}s")
        for phase, seconds in result.phases.items():
            say(f"  {phase}: {seconds:.1f}s")
        replayed = ", ".join(f"{k}={v}" for k, v in db_options.items())
        say(f"  start mariadbd with --datadir={options.target}" + (f" (replayed to {replayed})" if replayed else ""))
        return
    say(f"restored {manifest.type} backup {manifest.label} of {name} into {where}: "
        f"{result.files} files written ({human_bytes(result.bytes_written)}) in {result.seconds:.1f}s")
    if delta:
        say(f"  delta: {result.unchanged_files} files already right, {result.removed} removed")
    if kind == "postgres":
        target_text = ", ".join(f"{k}={v}" for k, v in db_options.items()) or "end of the archive"
        say(f"  recovery: {target_text}; start the server on {options.target} to recover")


def _restore_database(policy, name, repo, manifest, database, into, table, as_json) -> None:
    if not database:
        raise UsageError("--into and --table go with --database NAME")
    if manifest.source_facts.get("mode") != "logical":
        raise UsageError(f"backup {manifest.label} is not a logical backup: --database restores a dump; "
                         "restore a physical backup with --target DIR")
    seconds = run_database_restore(repo, make_source(policy, name), manifest, database, into, table)
    if as_json:
        emit_json({"source": name, "backup": manifest.label, "database": database, "into": into or database,
                   "table": table, "seconds": round(seconds, 3)})
        return
    say(f"restored database {database} of backup {manifest.label} as {into or database}"
        + (f" (table {table})" if table else "") + f" in {seconds:.1f}s")


def register(cli: click.Group) -> None:
    cli.add_command(restore)
