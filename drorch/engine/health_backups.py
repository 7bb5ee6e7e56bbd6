"""`drorch check` items about a source's backups, from its repository: the
age of the newest recovery point against the RPO, the age of the last
successful restore verification against verify.max_age, and the restore time
it measured against the RTO."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drorch.engine.health import Item
from drorch.errors import DrorchError
from drorch.repo import verifications
from drorch.repo.catalog import Catalog
from drorch.repo.repository import Repository
from drorch.timefmt import format_duration, iso, parse_iso, utcnow


def backup_items(source: str, repo: Repository, *, rpo: timedelta | None, max_age: timedelta | None,
                 rto: timedelta | None, wal_archive: bool, now: datetime | None = None) -> list[Item]:
    now = now or utcnow()
    return [recovery_point_item(source, repo, rpo, wal_archive, now),
            verification_results_item(source, repo, now),
            restore_verification_item(source, repo, max_age, now),
            restore_time_item(source, repo, rto)]


def _age(moment: datetime, now: datetime) -> str:
    return format_duration(timedelta(seconds=max(0, int((now - moment).total_seconds())))) + " ago"


def recovery_point_item(source: str, repo: Repository, rpo: timedelta | None, wal_archive: bool,
                        now: datetime) -> Item:
    """The newest point the source can be restored to: its newest backup, or for a
    database with a WAL archive, the newest archived WAL file."""
    name = f"source {source}: recovery point"
    latest = Catalog(repo).latest(source)
    points = []
    if latest is not None:
        points.append((parse_iso(latest.finished), f"newest backup {latest.label} finished "
                                                   f"{_age(parse_iso(latest.finished), now)}"))
    if wal_archive and latest is not None:
        newest_wal = _newest_wal(repo, source)
        if newest_wal is not None:
            points.append((newest_wal, f"WAL archived {_age(newest_wal, now)}"))
    if not points:
        return Item(name, "fail" if rpo else "warn", f"no committed backup of {source}",
                    f"take one: `drorch backup --source {source} --type full`")
    point = max(moment for moment, _ in points)
    message = "; ".join(text for _, text in points)
    if rpo is None:
        return Item(name, "skip", f"{message} (no objectives.rpo in the policy)")
    if now - point > rpo:
        return Item(name, "fail", f"{message}: older than the RPO of {format_duration(rpo)}",
                    f"backups of {source} are not keeping up: check that scheduled backups run and succeed "
                    f"(`drorch list --source {source} --all` shows failed runs), or run "
                    f"`drorch backup --source {source}` now")
    return Item(name, "ok", f"{message} (RPO {format_duration(rpo)})")


def _newest_wal(repo: Repository, source: str) -> datetime | None:
    newest = max((info.mtime for info in repo.storage.list(f"wal/{source}/")
                  if not info.key.endswith(("archive.info", ".history"))), default=None)
    return None if newest is None else datetime.fromtimestamp(newest, timezone.utc)


def verification_results_item(source: str, repo: Repository, now: datetime) -> Item:
    """Backups whose newest verification failed: damage found and not dealt with."""
    name = f"source {source}: verifications"
    present = set(Catalog(repo).labels(source))  # (records of backups deleted by hand do not count)
    last = {label: ref for label, ref in verifications.last_by_label(repo, source).items() if label in present}
    if not last:
        return Item(name, "skip", "no backup has been verified yet (`drorch verify`)")
    failed = [ref for ref in last.values() if ref.result == "failed"]
    if failed:
        listed = ", ".join(f"{r.label} ({r.level}, {_age(r.at, now)})" for r in failed[:10])
        return Item(name, "fail", f"{len(failed)} backup(s) failed their last verification: {listed}",
                    f"`drorch verify --source {source} --backup LABEL --level LEVEL` shows what is damaged; "
                    "take a new full backup, and restore the damaged objects from a copy or expire the backups")
    return Item(name, "ok", f"the last verification of each of {len(last)} verified backup(s) passed")


def restore_verification_item(source: str, repo: Repository, max_age: timedelta | None, now: datetime) -> Item:
    name = f"source {source}: restore verification"
    last = verifications.last_passed(repo, source, "restore", set(Catalog(repo).labels(source)))
    seen = f"last passed {_age(last.at, now)} ({last.label}, {iso(last.at)})" if last else \
        "no backup has passed a restore verification"
    if max_age is None:
        return Item(name, "skip", f"{seen} (no verify.max_age in the policy)")
    if last is None or now - last.at > max_age:
        return Item(name, "fail", f"{seen}: the policy asks for one within {format_duration(max_age)}",
                    f"run `drorch verify --source {source} --level restore` (and schedule it); "
                    "if it fails, its output says what is wrong")
    return Item(name, "ok", f"{seen} (limit {format_duration(max_age)})")


def restore_time_item(source: str, repo: Repository, rto: timedelta | None) -> Item:
    name = f"source {source}: restore time"
    last = verifications.last_passed(repo, source, "restore", set(Catalog(repo).labels(source)))
    if last is None:
        return Item(name, "skip", "no restore verification has measured it yet")
    try:
        record = verifications.read(repo, last)
    except DrorchError as exc:
        return Item(name, "warn", f"cannot read the record of the last restore verification: {exc.message}")
    seconds = record.get("ready_seconds") or record.get("restore_seconds")
    if seconds is None:
        return Item(name, "skip", "the last restore verification did not measure it")
    measured = f"{seconds:.1f}s to restore {last.label} and have it ready ({iso(last.at)})"
    if rto is None:
        return Item(name, "skip", f"{measured} (no objectives.rto in the policy)")
    if seconds > rto.total_seconds():
        return Item(name, "warn", f"{measured}: more than the RTO of {format_duration(rto)}",
                    "a real restore would take longer than the objective: restore from a faster repository, "
                    "take fulls more often (shorter chains, less WAL to replay), or revise the objective")
    return Item(name, "ok", f"{measured} (RTO {format_duration(rto)})")
