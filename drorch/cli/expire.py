"""`drorch expire`."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, policy_option, source_option
from drorch.cli.render import emit_json, human_bytes, say, table
from drorch.engine.expire import run_expire
from drorch.factory import open_repository, retention_rules, source_policy
from drorch.timefmt import iso


@click.command("expire")
@policy_option
@source_option
@click.option("--dry-run", is_flag=True, help="say what would be removed and why; remove nothing")
@json_option
def expire(policy_path, source: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention: remove expired backups and leftovers of runs that never committed."""
    policy = load(policy_path)
    names = [source] if source else sorted(policy.sources)
    results = []
    for name in names:
        model = source_policy(policy, name)
        repo = open_repository(policy, model.repository)
        results.append(run_expire(repo, name, retention_rules(policy, name), dry_run=dry_run,
                                  with_wal=model.kind == "postgres",
                                  with_binlog=model.kind == "mariadb" and model.mode == "physical"))
    if as_json:
        emit_json([{"source": r.source, "dry_run": r.dry_run, "expired": r.expired,
                    "leftovers": r.leftovers, "freed_bytes": r.freed_bytes, "wal_removed": r.wal_removed,
                    "binlogs_removed": r.binlogs_removed,
                    "uploads_aborted": r.uploads_aborted,
                    "locked": [{"label": label, "until": _until(until)} for label, until in r.locked.items()],
                    "decisions": [{"label": d.label, "keep": d.keep, "reasons": d.reasons}
                                  for d in r.decisions]} for r in results])
        return
    for r in results:
        verb = "would remove" if dry_run else "removed"
        say(f"{r.source}: {verb} {len(r.expired)} backup(s) and {len(r.leftovers)} unfinished run(s), "
            f"{human_bytes(r.freed_bytes)}" + (f"; {len(r.wal_removed)} WAL file(s)" if r.wal_removed else "")
            + (f"; {len(r.binlogs_removed)} binlog(s)" if r.binlogs_removed else ""))
        if r.decisions:
            table(["LABEL", "DECISION", "WHY"],
                  [[d.label, "keep" if d.keep else "locked" if d.label in r.locked else
                    ("expire" if dry_run else "expired"), "; ".join(d.reasons)] for d in r.decisions])
        for label in r.leftovers:
            if label not in r.locked:
                say(f"  {'would remove' if dry_run else 'removed'} leftovers of unfinished run {label}")
        if r.uploads_aborted:
            say(f"  aborted {r.uploads_aborted} multipart upload(s) that interrupted backups left behind")
        for label, until in r.locked.items():
            if _until(until):
                say(f"  {label}: still locked (Object Lock) until {_until(until)}; "
                    "expire can remove it after then")
            else:
                say(f"  {label}: still retained by Object Lock (a legal hold, or a retention without a known "
                    "end); expire can remove it once that is lifted")


def _until(until) -> str | None:
    """An ISO time, or None for a legal hold (no end date)."""
    return None if until is None or until.year == 9999 else iso(until)


def register(cli: click.Group) -> None:
    cli.add_command(expire)
