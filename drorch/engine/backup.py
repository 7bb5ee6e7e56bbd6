"""One backup of one source: lock, plan, copy, commit (FORMAT.md, write order)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

from drorch import __version__
from drorch.engine import wal
from drorch.engine.hooks import Hooks, backup_facts
from drorch.engine.memory import gc_paused
from drorch.engine.packer import Packer
from drorch.engine.pipeline import Pipeline
from drorch.engine.progress import Progress
from drorch.errors import DrorchError, LockedError, UsageError
from drorch.faults import checkpoint
from drorch.fsmeta import DIR, HARDLINK, Entry
from drorch.repo import layout
from drorch.repo.catalog import Catalog
from drorch.repo.locks import SourceLock
from drorch.repo.manifest import Manifest, read_entries, write_entries, write_manifest
from drorch.repo.repository import Repository
from drorch.sources.base import Source
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
TYPES = ("full", "diff", "incr")


@dataclass
class BackupResult:
    source: str
    label: str
    type: str
    requested_type: str
    parent: str | None
    why: str  # why it ran as this type
    started: str
    finished: str
    stats: dict
    warnings: list[str] = field(default_factory=list)
    repo_created: bool = False
    hooks: list[dict] = field(default_factory=list)  # hook runs (pre and post), as HookRun.as_dict()


def choose_parent(backups: list[Manifest], requested: str) -> tuple[str, Manifest | None, str]:
    """(type to run, parent, why) for a requested type, per FORMAT.md's chain rules."""
    if requested == "full":
        return "full", None, "full requested"
    fulls = [m for m in backups if m.type == "full"]
    if not fulls:
        return "full", None, f"{requested} requested, but there is no full backup to build on: ran a full"
    if requested == "diff":
        return "diff", fulls[-1], f"diff requested: changes since full {fulls[-1].label}"
    return "incr", backups[-1], f"incr requested: changes since {backups[-1].type} {backups[-1].label}"


def run_backup(repo: Repository, source: Source, requested: str, *, checksum: bool = False,
               progress: Progress | None = None, lock_wait: float = 0.0,
               workers: int | None = None, lock: SourceLock | None = None,
               reason: str | None = None, hooks: Hooks | None = None) -> BackupResult:
    """lock: a lock of the source the caller already holds (and releases);
    reason: why the caller asked for this type (the daemon's schedule), kept in `why`;
    hooks: the source's hook scripts (pre_backup after the lock and run record,
    post_backup after the commit, on_failure after a failure)."""
    if requested not in TYPES:
        raise DrorchError(f"unknown backup type {requested!r}", "use full, diff or incr", exit_code=2)
    if requested != "full" and getattr(source, "full_only", False):
        raise UsageError(f"source {source.name} takes full backups only (mode logical); use --type full")
    progress = progress or Progress()
    hooks = hooks or Hooks()
    backup = _Backup(repo, source, requested, checksum, progress, lock, workers, reason, hooks)
    try:
        backup.phase = progress.phase = "connect"
        getattr(source, "connect", lambda: None)()  # a host that refuses us fails before anything is written
        backup.phase = progress.phase = "lock"
        if lock is not None:
            with gc_paused():
                result = backup.run()
        else:
            backup.lock = SourceLock(repo, source.name, "backup").acquire(wait=lock_wait)
            try:
                with gc_paused():
                    result = backup.run()
            finally:
                backup.lock.release()
    except LockedError:
        raise  # another run has the source: not this backup's failure
    except Exception as exc:  # not BaseException: a stop from outside (shutdown, ^C) runs no hook
        backup.on_failure(exc)
        raise
    backup.post_backup(result)
    return result


class _Backup:
    archive_timeout = 60.0

    def __init__(self, repo, source, requested, checksum, progress, lock, workers, reason=None, hooks=None):
        self.repo, self.source, self.requested, self.reason = repo, source, requested, reason
        self.checksum, self.progress, self.lock, self.workers = checksum, progress, lock, workers
        self.hooks: Hooks = hooks or Hooks()
        self.warnings: list[str] = []
        self.phase = "plan"
        self.label: str | None = None
        self.btype: str | None = None
        self.archive_timeout = getattr(getattr(source, "settings", None), "archive_timeout", 60.0)

    def warn(self, message: str) -> None:
        log.warning("%s: %s", self.source.name, message)
        self.warnings.append(message)

    def run(self) -> BackupResult:
        catalog = Catalog(self.repo)
        backups = catalog.backups(self.source.name)
        btype, parent, why = choose_parent(backups, self.requested)
        if self.reason:
            why = f"{self.reason}; {why}"
        taken = [m.label for m in backups] + [r.label for r in catalog.runs(self.source.name)]
        started = utcnow()
        self.label = layout.new_label(started, btype, taken)
        self.run_record = {"status": "running", "type": btype, "requested_type": self.requested,
                           "parent": parent.label if parent else None, "started": iso(started),
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "lock_token": self.lock.token, "phase": "begin"}
        self.repo.put_json(layout.run_key(self.source.name, self.label), self.run_record)
        checkpoint("after-run-record")
        log.info("%s: backup %s started (%s)", self.source.name, self.label, why)
        self.btype = btype
        try:
            if self.hooks.has("pre_backup"):
                self._set_phase("pre-backup hook")
                self.hooks.pre_backup(self._facts("running", started=iso(started), why=why))
            manifest = self._copy_and_commit(btype, parent, why, started)
        except BaseException as exc:
            self._record_failure(exc)
            raise
        try:
            self.repo.storage.delete(layout.run_key(self.source.name, self.label))
        except DrorchError as exc:  # committed already; a stale run record is harmless
            log.warning("could not remove the run record of %s: %s", self.label, exc)
        if getattr(self.source, "archives_binlogs", False):
            self._archive_binlogs()
        return BackupResult(self.source.name, self.label, btype, self.requested,
                            parent.label if parent else None, why, manifest["started"],
                            manifest["finished"], manifest["stats"], self.warnings,
                            repo_created=self.repo.created, hooks=[r.as_dict() for r in self.hooks.runs])

    def _facts(self, status: str, **more) -> dict:
        return backup_facts(self.source.name, self.label, self.btype, self.requested, status=status,
                            repository_location=self.repo.location, **more)

    def post_backup(self, result: BackupResult) -> None:
        """The backup is committed: a failing hook is reported (a warning), nothing more."""
        if not self.hooks.has("post_backup"):
            return
        stats = result.stats
        for run in self.hooks.run("post_backup", self._facts(
                "ok", started=result.started, finished=result.finished, why=result.why, parent=result.parent,
                size_bytes=stats.get("size_bytes"), stored_bytes=stats.get("stored_bytes"),
                files=stats.get("files"), warnings=len(result.warnings))):
            result.hooks.append(run.as_dict())
            if not run.ok:
                result.warnings.append(f"{run.describe()} (the backup is good)")

    def on_failure(self, exc: Exception) -> None:
        if not self.hooks.has("on_failure"):
            return
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        self.hooks.run("on_failure", self._facts("failed", error=message, phase=self.phase))

    def _archive_binlogs(self) -> None:
        """After a MariaDB backup: close the current binlog and archive what the
        archive lacks, so the backup can be replayed forward.  The backup is
        committed either way: a failure here is a warning."""
        from drorch.engine import binlog

        try:
            done = binlog.archive_closed(self.repo, self.source, flush=True)
            log.info("%s: %d binlog(s) archived after the backup", self.source.name,
                     sum(1 for a in done if a.stored))
        except DrorchError as exc:
            self.warn(f"binlogs were not archived after the backup: {exc.message} (run `drorch binlog-archive`)")

    def _set_phase(self, phase: str) -> None:
        self.phase = self.progress.phase = phase

    def _copy_and_commit(self, btype: str, parent: Manifest | None, why: str, started) -> dict:
        self._set_phase("begin")
        if hasattr(self.source, "plan"):  # sources that build increments themselves (mariabackup)
            self.source.plan(btype, parent.source_facts if parent else None)
        begin_facts = self.source.begin(self.warn)
        try:
            # Not cached in the parent: each entry goes once the walk has passed it.
            reference = {e.path: e for e in read_entries(self.repo, parent, cache=False)} if parent else {}
            self._set_phase("copy")
            packer = Packer(self.repo, self.source.name, self.label)
            pipeline = Pipeline(self.repo, self.source, self.label, packer, self.progress,
                                checksum_all=self.checksum, workers=self.workers)
            entries: list[Entry] = []
            try:
                self._walk(pipeline, reference, entries)
                for entry, chunks in getattr(self.source, "streams", lambda warn: [])(self.warn):
                    self.progress.plan(files=1)
                    entries.append(entry)
                    pipeline.add_stream(entry, chunks)
                stats = pipeline.drain()
            except BaseException:
                pipeline.abort()
                packer.abort()
                raise
            self._set_phase("end")
            end = self.source.end(self.warn)
        except BaseException:
            self.source.abort()
            raise
        for entry, data in end.extra_files:
            pipeline.add_generated(entry, data)
            entries.append(entry)
        packer.flush()
        required = getattr(self.source, "required_archive", None)
        if required is not None:
            self._set_phase("archive")
            wal.wait_for(self.repo, self.source.name, required(end.facts), self.archive_timeout)
        self.warnings += stats.warnings
        entries = _drop_vanished(entries)
        self._set_phase("commit")
        checkpoint("before-entries")
        counts = {"files": sum(1 for e in entries if e.type != DIR), "size_bytes": sum(
            e.size for e in entries if e.type == "file")}
        counts["dirs"] = len(entries) - counts["files"]
        entries_ref = write_entries(self.repo, self.source.name, self.label, entries, consume=True)
        self.repo.storage.sync()  # every pack durable before the commit point
        manifest = self._manifest(btype, parent, why, started, entries_ref, packer, counts, stats,
                                  {**begin_facts, **end.facts})
        checkpoint("before-manifest")
        self.lock.ensure_held()
        write_manifest(self.repo, manifest)
        checkpoint("after-manifest")
        log.info("%s: backup %s committed: %d files, %d bytes stored", self.source.name, self.label,
                 counts["files"], manifest["stats"]["stored_bytes"])
        return manifest

    def _manifest(self, btype, parent, why, started, entries_ref, packer, counts, stats, facts) -> dict:
        return {
            "label": self.label, "source": self.source.name, "kind": self.source.kind,
            "type": btype, "requested_type": self.requested, "why": why,
            "parent": parent.label if parent else None,
            "chain": (parent.chain + [parent.label]) if parent else [],
            "started": iso(started), "finished": iso(utcnow()),
            "host": socket.gethostname(), "drorch_version": __version__,
            "entries": entries_ref, "packs": packer.packs,
            "stats": {"files": counts["files"], "dirs": counts["dirs"], "size_bytes": counts["size_bytes"],
                      "stored_bytes": packer.stored_bytes + entries_ref["size"],
                      "read_bytes": stats.read_bytes, "new_files": stats.new_files,
                      "changed_files": stats.changed_files, "unchanged_files": stats.unchanged_files,
                      "torn_files": stats.torn_files},
            "source_facts": facts,
            "warnings": self.warnings,
        }

    def _walk(self, pipeline: Pipeline, reference: dict[str, Entry], entries: list[Entry]) -> None:
        files = nbytes = 0  # planned in bunches: a lock per entry costs the workers the GIL
        for entry in self.source.scan(self.warn):
            entries.append(entry)
            pipeline.add(entry, reference.pop(entry.path, None))
            files, nbytes = files + 1, nbytes + entry.size
            if files == 256:
                self.progress.plan(files=files, nbytes=nbytes)
                files = nbytes = 0
        self.progress.plan(files=files, nbytes=nbytes)
        reference.clear()

    def _record_failure(self, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        record = {**self.run_record, "status": "failed", "phase": self.phase, "error": message,
                  "failed": iso(utcnow())}
        if getattr(exc, "aborted", False):  # stopped from outside (daemon shutdown): not the source's fault
            record["aborted"] = True
        try:
            self.repo.put_json(layout.run_key(self.source.name, self.label), record)
        except Exception as write_exc:  # noqa: BLE001 - the original error matters more
            log.error("could not record the failure of %s: %s", self.label, write_exc)


def _drop_vanished(entries: list[Entry]) -> list[Entry]:
    gone = {e.path for e in entries if e.flags and "vanished" in e.flags}
    if not gone:
        return entries
    return [e for e in entries if e.path not in gone and not (e.type == HARDLINK and e.target in gone)]
