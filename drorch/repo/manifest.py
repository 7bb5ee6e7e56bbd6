"""Manifests and entries: serialising what a backup holds (FORMAT.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from drorch.errors import IntegrityError, RepositoryError
from drorch.fsmeta import TYPES, Entry, safe_relpath
from drorch.repo import layout
from drorch.repo.repository import Repository

MANIFEST_FORMAT = 1
_OPTIONAL = ("user", "group", "target", "rdev", "flags")


@dataclass
class Manifest:
    """The manifest of one committed backup (its JSON header, not the entries)."""

    data: dict[str, Any]
    pinned: bool = False
    verification: dict | None = None
    _entries: list[Entry] | None = field(default=None, repr=False)

    label = property(lambda self: self.data["label"])
    source = property(lambda self: self.data["source"])
    type = property(lambda self: self.data["type"])
    parent = property(lambda self: self.data.get("parent"))
    chain = property(lambda self: list(self.data.get("chain") or []))
    started = property(lambda self: self.data["started"])
    finished = property(lambda self: self.data["finished"])
    stats = property(lambda self: self.data.get("stats") or {})
    kind = property(lambda self: self.data.get("kind", "files"))
    source_facts = property(lambda self: self.data.get("source_facts") or {})


def _encode_name(obj: dict, key: str, value: str) -> None:
    try:
        value.encode("utf-8")
        obj[key] = value
    except UnicodeEncodeError:  # surrogate-escaped bytes: a name that is not UTF-8
        raw = value.encode("utf-8", "surrogateescape")
        obj[key + "_b64"] = base64.b64encode(raw).decode("ascii")


def _decode_name(obj: dict, key: str) -> str | None:
    if key in obj:
        return obj[key]
    if key + "_b64" in obj:
        return base64.b64decode(obj[key + "_b64"]).decode("utf-8", "surrogateescape")
    return None


def entry_to_json(entry: Entry) -> dict:
    obj: dict[str, Any] = {}
    _encode_name(obj, "path", entry.path)
    obj.update(type=entry.type, mode=entry.mode, uid=entry.uid, gid=entry.gid,
               mtime_ns=entry.mtime_ns, ctime_ns=entry.ctime_ns, ino=entry.ino, size=entry.size)
    for key in ("user", "group", "rdev", "flags"):
        value = getattr(entry, key)
        if value is not None:
            obj[key] = value
    if entry.target is not None:
        _encode_name(obj, "target", entry.target)
    if entry.type == "file":
        obj.update(checksum=entry.checksum, bs=entry.bs, blocks=entry.blocks)
    return obj


def entry_from_json(obj: dict) -> Entry:
    path = _decode_name(obj, "path")
    if path is None or not safe_relpath(path):
        raise RepositoryError(f"manifest entry with an unsafe path {path!r}: refusing it",
                              "the manifest is damaged or was crafted; do not restore from it")
    if obj.get("type") not in TYPES:
        raise RepositoryError(f"manifest entry {path!r} has an unknown type {obj.get('type')!r}")
    return Entry(path=path, type=obj["type"], mode=obj.get("mode", 0o644), uid=obj.get("uid", 0),
                 gid=obj.get("gid", 0), user=obj.get("user"), group=obj.get("group"),
                 mtime_ns=obj.get("mtime_ns", 0), ctime_ns=obj.get("ctime_ns", 0),
                 ino=obj.get("ino", 0), size=obj.get("size", 0), target=_decode_name(obj, "target"),
                 rdev=obj.get("rdev"), checksum=obj.get("checksum"), bs=obj.get("bs", 0),
                 blocks=[tuple(b) for b in obj.get("blocks") or ()], flags=obj.get("flags"))


def encode_entries(entries: Iterable[Entry]) -> bytes:
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    return "".join(dumps(entry_to_json(e)) + "\n" for e in entries).encode("utf-8")


def decode_entries(payload: bytes) -> Iterator[Entry]:
    for line in payload.decode("utf-8").splitlines():
        if line:
            yield entry_from_json(json.loads(line))


def write_entries(repo: Repository, source: str, label: str, entries: list[Entry]) -> dict:
    """Store the entries object; returns the reference the manifest records."""
    key = layout.entries_key(source, label)
    blob = repo.put_blob(key, encode_entries(entries))
    return {"key": key, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
            "count": len(entries)}


def read_manifest(repo: Repository, source: str, label: str) -> Manifest:
    key = layout.manifest_key(source, label)
    try:
        data = json.loads(repo.get_blob(key))
    except ValueError:
        raise RepositoryError(f"the manifest of {source} {label} is not valid JSON",
                              "the repository is damaged: run `drorch verify`") from None
    if data.get("format", 0) > MANIFEST_FORMAT:
        raise RepositoryError(f"the manifest of {source} {label} uses format {data['format']}",
                              "upgrade drorch to read it")
    return Manifest(data)


def read_entries(repo: Repository, manifest: Manifest) -> list[Entry]:
    if manifest._entries is None:
        ref = manifest.data["entries"]
        blob = repo.storage.get(ref["key"])
        if hashlib.sha256(blob).hexdigest() != ref["sha256"]:
            raise IntegrityError(f"the entries of {manifest.source} {manifest.label} do not match "
                                 f"their checksum ({ref['key']})", "run `drorch verify`; restore "
                                 "from another backup or a copy of the repository")
        payload = repo.codec.decode(blob, context=ref["key"], what=ref["key"])
        manifest._entries = list(decode_entries(payload))
    return manifest._entries


def write_manifest(repo: Repository, data: dict) -> None:
    """The commit point of a backup."""
    data = {"format": MANIFEST_FORMAT, **data}
    repo.put_blob(layout.manifest_key(data["source"], data["label"]),
                  json.dumps(data, separators=(",", ":")).encode(), if_absent=True)
