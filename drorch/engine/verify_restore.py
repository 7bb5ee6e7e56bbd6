"""Verify level `restore`: restore a backup into a sandbox with drorch's own
restore, compare the restored tree with the manifest, let the source check the
copy (a database starts, recovers, is checked and answers the policy's SQL
assertions), then remove the sandbox — always, also when a check fails or the
process is interrupted.  A sandbox left by a verification that was killed
(SIGKILL) is cleaned up by the next one on that host.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from drorch.engine.progress import Progress
from drorch.engine.restore import run_restore
from drorch.engine.verify_archive import rule_for
from drorch.engine.verify_tree import check_tree
from drorch.errors import DrorchError
from drorch.fsmeta import Entry
from drorch.hosts.base import Host
from drorch.repo.locks import holder_alive, process_start
from drorch.repo.manifest import Manifest, read_entries
from drorch.repo.repository import Repository
from drorch.sources.base import Check, RestoreOptions, Sandbox
from drorch.sources.sandbox_server import kill_left_server
from drorch.timefmt import iso, utcnow

log = logging.getLogger(__name__)
PREFIX = "drorch-verify-"
OWNER = "drorch-sandbox.json"  # who uses a sandbox: a later verification removes it once that process is gone
REMOVE_TRIES = 4


@dataclass
class RestoreOutcome:
    checks: list[Check] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    restore_seconds: float | None = None
    ready_seconds: float | None = None  # restored and ready to serve: evidence for the RTO
    sandbox: dict = field(default_factory=dict)


def sandbox_base(configured: str | None, host_name: str = "local") -> str:
    """The directory sandboxes go under: the policy's, or the temporary directory of
    the backup host (/tmp on a verify host)."""
    return configured or (tempfile.gettempdir() if host_name == "local" else "/tmp")


def verify_by_restore(repo: Repository, source, manifest: Manifest, host: Host, *, base: str,
                      assertions: list, timeout: float, progress: Progress | None = None) -> RestoreOutcome:
    outcome = RestoreOutcome()
    sweep_leftovers(host, base)
    path = _make_sandbox(host, base, manifest)
    sandbox = Sandbox(path=path, target=posixpath.join(path, "restore"), assertions=assertions, timeout=timeout)
    outcome.sandbox = sandbox.info
    sandbox.info.update(host=host.name, path=path)
    _archive_in_sandbox(repo, manifest, host, sandbox)
    try:
        if _restore(repo, source, manifest, host, sandbox, outcome, progress):
            _tree(repo, source, manifest, host, sandbox, outcome)
            _source_checks(source, manifest, host, sandbox, outcome)
    finally:
        _remove(host, path, outcome)
    return outcome


def _archive_in_sandbox(repo: Repository, manifest: Manifest, host: Host, sandbox: Sandbox) -> None:
    """On a verify host, the archive files the backup needs (PostgreSQL: its WAL) are
    put into the sandbox by the source's checks (sandbox.fetch_archive) and the
    restored copy reads them there: nothing of drorch, its policy or the repository
    is needed on that host.  On the backup host, recovery uses drorch's wal-get."""
    rule = rule_for(manifest.kind)
    if host.name == "local" or rule is None or not rule.required(manifest.source_facts):
        return
    sandbox.archive_dir = posixpath.join(sandbox.path, "archive")
    sandbox.fetch_archive = lambda name: repo.get_blob(rule.key(manifest.source, name))


def _restore(repo, source, manifest, host, sandbox, outcome, progress) -> bool:
    started = time.monotonic()
    options = RestoreOptions(target=sandbox.target, source_options={"sandbox": True})
    if sandbox.archive_dir:
        options.source_options["archive_dir"] = sandbox.archive_dir
    try:
        result = run_restore(repo, source, manifest, options, host, progress=progress)
    except (DrorchError, OSError) as exc:
        outcome.phases["restore"] = time.monotonic() - started
        outcome.checks.append(Check("restore", "failed", getattr(exc, "message", None) or str(exc),
                                    outcome.phases["restore"]))
        return False
    outcome.phases["restore"] = outcome.restore_seconds = time.monotonic() - started
    for name, seconds in (getattr(result, "phases", None) or {}).items():
        outcome.phases[f"restore: {name}"] = seconds
    written = (f"{result.files} files, {result.bytes_written} bytes written" if result.bytes_written else
               f"{result.files} backup stream(s) of the chain applied")
    outcome.checks.append(Check("restore", "passed", f"{written} into {sandbox.target}, every block matched "
                                "its SHA-256", outcome.restore_seconds))
    return True


def _tree(repo, source, manifest, host, sandbox, outcome) -> None:
    if getattr(source, "restores_chain", False):  # the backup is a tool's stream, not the restored files
        outcome.checks.append(Check("files", "skipped", "the backup holds the backup tool's streams: the tool "
                                    "checked them while extracting and preparing"))
        return
    started = time.monotonic()
    count, problems = check_tree(host, sandbox.target, read_entries(repo, manifest),
                                 skip=tuple(getattr(source, "restore_rewrites", ())))
    manifest._entries = None
    seconds = outcome.phases["files"] = time.monotonic() - started
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        outcome.checks.append(Check("files", "failed", f"{len(problems)} of {count} entries differ from the "
                                    f"manifest: " + "; ".join(problems[:20]) + more, seconds))
    else:
        outcome.checks.append(Check("files", "passed", f"all {count} entries match the manifest (type, "
                                    "content, size, mode, owner, time, link)", seconds))


def _source_checks(source, manifest, host, sandbox, outcome) -> None:
    hook = getattr(source, "verify_restored", None)
    if hook is None:
        outcome.ready_seconds = outcome.restore_seconds
        return
    started = time.monotonic()
    try:
        hook(sandbox, manifest.source_facts, host, outcome.checks.append)
    finally:
        outcome.phases["checks"] = time.monotonic() - started
        recovery = sandbox.info.get("startup_seconds")
        if recovery is not None:
            outcome.ready_seconds = outcome.restore_seconds + recovery


def _make_sandbox(host: Host, base: str, manifest: Manifest) -> str:
    """A new directory under base, reachable by the database's OS user (0755), with an owner note."""
    path = posixpath.join(base, f"{PREFIX}{uuid.uuid4().hex[:10]}")  # short: unix socket paths are limited
    host.makedirs(path)
    st = host.lstat(path)
    host.set_meta(path, Entry(path="", type="dir", mode=0o755, uid=st.st_uid, gid=st.st_gid,
                              mtime_ns=st.st_mtime_ns))
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                        "source": manifest.source, "label": manifest.label, "since": iso(utcnow())}).encode()
    host.put(posixpath.join(path, OWNER), [owner], mode=0o644)
    return path


def _remove(host: Host, path: str, outcome: RestoreOutcome) -> None:
    started = time.monotonic()
    gone, detail = _remove_tries(host, path)
    outcome.phases["cleanup"] = time.monotonic() - started
    outcome.checks.append(Check("cleanup", "passed" if gone else "failed", detail, outcome.phases["cleanup"]))


def _remove_tries(host: Host, path: str) -> tuple[bool, str]:
    """(removed, what happened): a killed server's last writes may still land while it goes."""
    for attempt in range(REMOVE_TRIES):
        try:
            host.remove(path)
            gone = host.lstat(path) is None
            detail = f"{path} removed" if gone else f"{path} is still there"
        except OSError as exc:
            gone, detail = False, f"could not remove {path}: {exc}"
        if gone:
            break
        time.sleep(0.5 * (attempt + 1))
    return gone, detail


def sweep_leftovers(host: Host, base: str) -> list[str]:
    """Remove sandboxes whose verification process is gone (killed before its
    cleanup ran), stopping what the source left running there first — on the
    backup host or a verify host alike (the owner note names the machine and
    process of the verification, wherever its sandbox is)."""
    removed = []
    for name in host.listdir(base) or []:
        path = posixpath.join(base, name)
        if not name.startswith(PREFIX) or host.lstat(posixpath.join(path, OWNER)) is None:
            continue
        try:
            owner = json.loads(host.read(posixpath.join(path, OWNER)))
        except (OSError, ValueError):
            continue
        if owner.get("host") != socket.gethostname() or holder_alive(owner):
            continue
        kill_left_server(host, path)
        gone, detail = _remove_tries(host, path)
        if not gone:  # never fail this verification for an old one's leftovers
            log.warning("sandbox left by a verification that is gone: %s", detail)
            continue
        removed.append(path)
        log.warning("removed sandbox %s left by verification pid %s (%s %s), which is gone", path,
                    owner.get("pid"), owner.get("source"), owner.get("label"))
    return removed
