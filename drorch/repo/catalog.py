"""What a repository holds: committed backups, unfinished runs, pins.

Everything here is read from the repository itself (principle 1); nothing
is cached between processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drorch.errors import NotFoundError, RestoreError
from drorch.repo import layout
from drorch.repo.locks import holder_alive
from drorch.repo.manifest import Manifest, read_manifest
from drorch.repo.repository import Repository
from drorch.timefmt import parse_iso


@dataclass
class RunRecord:
    """A backup run that did not commit: `running`, `incomplete` or `failed`."""

    source: str
    label: str
    status: str
    data: dict


class Catalog:
    def __init__(self, repo: Repository):
        self.repo = repo
        self._manifests: dict[tuple[str, str], Manifest] = {}

    def sources(self) -> list[str]:
        names = set()
        for prefix in (layout.manifests_prefix(), layout.runs_prefix()):
            for info in self.repo.storage.list(prefix):
                names.add(layout.split_key(info.key)[0])
        return sorted(names)

    def labels(self, source: str) -> list[str]:
        return sorted(layout.split_key(info.key)[1]
                      for info in self.repo.storage.list(layout.manifests_prefix(source))
                      if layout.is_label(layout.split_key(info.key)[1]))

    def manifest(self, source: str, label: str) -> Manifest:
        key = (source, label)
        if key not in self._manifests:
            try:
                self._manifests[key] = read_manifest(self.repo, source, label)
            except NotFoundError:
                raise RestoreError(f"no backup {label} of source {source} in {self.repo.location}",
                                   f"`drorch list --source {source}` shows the backups there are") from None
        return self._manifests[key]

    def backups(self, source: str) -> list[Manifest]:
        """Committed backups, oldest first, with their pin state."""
        pins = self.pins(source)
        out = []
        for label in self.labels(source):
            manifest = self.manifest(source, label)
            manifest.pinned = label in pins
            out.append(manifest)
        return out

    def pins(self, source: str) -> set[str]:
        return {layout.split_key(info.key)[1]
                for info in self.repo.storage.list(layout.pins_prefix(source))}

    def runs(self, source: str) -> list[RunRecord]:
        """Runs without a committed manifest.  A run whose process still holds
        the source's lock is `running`; one whose process is gone, `incomplete`."""
        committed = set(self.labels(source))
        try:
            lock = self.repo.get_plain_json(layout.lock_key(source))
        except NotFoundError:
            lock = None
        live_token = lock.get("token") if lock and holder_alive(lock) else None
        out = []
        for info in self.repo.storage.list(layout.runs_prefix(source)):
            label = layout.split_key(info.key)[1]
            if label in committed or not layout.is_label(label):
                continue
            try:
                data = self.repo.get_json(info.key)
            except NotFoundError:
                continue
            status = data.get("status", "incomplete")
            if status == "running":
                alive = live_token is not None and live_token == data.get("lock_token")
                status = "running" if alive else "incomplete"
            out.append(RunRecord(source, label, status, data))
        return out

    # -- choosing a backup --------------------------------------------------------

    def latest(self, source: str, types: tuple[str, ...] = ("full", "diff", "incr")) -> Manifest | None:
        for manifest in reversed(self.backups(source)):
            if manifest.type in types:
                return manifest
        return None

    def at_or_before(self, source: str, moment: datetime) -> Manifest:
        """The newest backup that finished at or before moment."""
        chosen = None
        for manifest in self.backups(source):
            if parse_iso(manifest.finished) <= moment:
                if chosen is None or parse_iso(manifest.finished) >= parse_iso(chosen.finished):
                    chosen = manifest
        if chosen is None:
            raise RestoreError(f"no backup of {source} finished at or before {moment.isoformat()}",
                               f"`drorch list --source {source}` shows when each backup finished")
        return chosen
