"""Restore of sources whose backups are tool streams applied in order (MariaDB):
every backup of the chain is fetched, and the source's tool prepares them."""

from __future__ import annotations

import time

from drorch.engine import binlog
from drorch.engine.restore import RestoreResult, entry_chunks
from drorch.errors import RestoreError
from drorch.repo.catalog import Catalog
from drorch.repo.manifest import Manifest, read_entries
from drorch.repo.repository import Repository
from drorch.sources.base import RestoreOptions
from drorch.sources.mariadb import STREAM_PATH
from drorch.sources.mariadb_facts import binlog_sequence, parse_position
from drorch.sources.mariadb_restore import ChainPart, MariadbRestore


def chain_of(catalog: Catalog, manifest: Manifest) -> list[Manifest]:
    """The full, then each backup up to manifest; every one must be there."""
    out = []
    for label in manifest.chain:
        try:
            out.append(catalog.manifest(manifest.source, label))
        except RestoreError:
            raise RestoreError(
                f"backup {manifest.label} cannot be restored: {label}, which its chain needs, is missing "
                f"from the repository (chain: {' <- '.join(manifest.chain + [manifest.label])}); nothing was "
                "restored", "restore an older backup whose chain is complete, or a copy (--repository)") from None
    return out + [manifest]


def _stream_of(repo: Repository, manifest: Manifest):
    entry = next((e for e in read_entries(repo, manifest) if e.path == STREAM_PATH), None)
    if entry is None:
        raise RestoreError(f"backup {manifest.label} holds no {STREAM_PATH}")
    return lambda: entry_chunks(repo, manifest.source, entry)


def run_chain_restore(repo: Repository, source, manifest: Manifest, options: RestoreOptions, host) -> RestoreResult:
    started = time.monotonic()
    if options.delta:
        raise RestoreError("--delta is not available for mariadb sources: use --force to replace the datadir",
                           exit_code=2)
    chain = chain_of(Catalog(repo), manifest)
    parts = [ChainPart(m.label, m.type, m.source_facts, _stream_of(repo, m)) for m in chain]
    work = MariadbRestore(host, options.target, source.settings.os_user)
    work.restore(parts, options.force)
    # time / position / gtid: replay to that point; latest: replay every archived binlog after the backup
    stop = {k: options.source_options.get(k) for k in ("time", "position", "gtid", "latest")
            if options.source_options.get(k)}
    if stop:
        _replay(repo, manifest, work, stop)
    work.finish()
    result = RestoreResult(manifest.source, manifest.label, manifest.type, options.target)
    result.files = len(chain)
    result.seconds = time.monotonic() - started
    result.phases = work.phases
    return result


def _replay(repo: Repository, manifest: Manifest, work: MariadbRestore, stop: dict) -> None:
    facts = manifest.source_facts
    first = facts.get("binlog_file")
    if not first:
        raise RestoreError(f"backup {manifest.label} recorded no binlog position: it cannot be replayed to a "
                           "point in time (was log_bin on?)")
    names = binlog.needed_from(list(binlog.archived(repo, manifest.source)), first)
    if stop.get("position"):
        last, _ = parse_position(stop["position"])
        stop = {**stop, "position": parse_position(stop["position"])}
        if binlog_sequence(last) is None or binlog_sequence(last) < binlog_sequence(first):
            raise RestoreError(f"--position {last} is before the backup's binlog {first}", exit_code=2)
        names = [n for n in names if binlog_sequence(n) <= binlog_sequence(last)]
        if not names or names[-1] != last:
            raise RestoreError(f"binlog {last} is not in the archive", "run `drorch binlog-archive` first")
    if not names:
        raise RestoreError(f"no archived binlog from {first} on: nothing to replay",
                           "run `drorch binlog-archive --flush` so the binlogs after the backup are archived")
    missing = binlog.gaps(names)
    if missing:
        raise RestoreError(f"the binlog archive has a gap: {', '.join(missing)} missing", "archive them first")
    work.replay([(name, lambda n=name: binlog.chunks(repo, manifest.source, n)) for name in names],
                facts["binlog_position"], stop)
