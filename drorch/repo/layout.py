"""Keys and labels of the repository format (FORMAT.md, "Keys" and "Labels")."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

CONFIG = "config"
#: keys rewritten or removed in normal use: never put under Object Lock retention
MUTABLE_PREFIXES = ("locks/", "runs/", "pins/", "probe/", "verify/", "runbooks/")
TYPE_LETTER = {"full": "F", "diff": "D", "incr": "I"}
LETTER_TYPE = {v: k for k, v in TYPE_LETTER.items()}
LABEL_RE = re.compile(r"^(\d{8}T\d{6}Z)-([FDI])$")
_LABEL_TIME = "%Y%m%dT%H%M%SZ"


def lock_key(source: str) -> str:
    return f"locks/{source}"


def run_key(source: str, label: str) -> str:
    return f"runs/{source}/{label}"


def runs_prefix(source: str | None = None) -> str:
    return f"runs/{source}/" if source else "runs/"


def manifest_key(source: str, label: str) -> str:
    return f"manifests/{source}/{label}"


def manifests_prefix(source: str | None = None) -> str:
    return f"manifests/{source}/" if source else "manifests/"


def data_prefix(source: str, label: str) -> str:
    return f"data/{source}/{label}/"


def pack_key(source: str, label: str, pack: int) -> str:
    return f"data/{source}/{label}/p{pack:06d}"


def entries_key(source: str, label: str) -> str:
    return f"data/{source}/{label}/entries"


def pin_key(source: str, label: str) -> str:
    return f"pins/{source}/{label}"


def pins_prefix(source: str) -> str:
    return f"pins/{source}/"


def verify_key(source: str, label: str, finished: datetime, level: str, result: str) -> str:
    """A verification record (FORMAT.md, "Verification records"): when, level and
    result are in the key, so listing shows each backup's last verification."""
    stamp = finished.astimezone(timezone.utc).strftime(_LABEL_TIME)
    return f"verify/{source}/{label}/{stamp}-{level}-{result}"


def verify_prefix(source: str, label: str | None = None) -> str:
    return f"verify/{source}/{label}/" if label else f"verify/{source}/"


VERIFY_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)-(structure|read|restore)-(passed|failed)$")


def parse_verify_key(key: str) -> tuple[str, str, datetime, str, str] | None:
    """'verify/SRC/LABEL/STAMP-LEVEL-RESULT' -> (SRC, LABEL, time, LEVEL, RESULT); None if not one."""
    parts = key.split("/")
    match = VERIFY_NAME_RE.match(parts[-1]) if len(parts) == 4 and parts[0] == "verify" else None
    if match is None or not is_label(parts[2]):
        return None
    when = datetime.strptime(match.group(1), _LABEL_TIME).replace(tzinfo=timezone.utc)
    return parts[1], parts[2], when, match.group(2), match.group(3)


def split_key(key: str) -> tuple[str, str]:
    """'manifests/SRC/LABEL' -> (SRC, LABEL)."""
    parts = key.split("/")
    return parts[1], parts[2]


def is_label(text: str) -> bool:
    return bool(LABEL_RE.match(text))


def label_type(label: str) -> str:
    return LETTER_TYPE[LABEL_RE.match(label).group(2)]


def label_time(label: str) -> datetime:
    stamp = LABEL_RE.match(label).group(1)
    return datetime.strptime(stamp, _LABEL_TIME).replace(tzinfo=timezone.utc)


def newest_label_time(existing: list[str]) -> datetime | None:
    return max((label_time(label) for label in existing), default=None)


def new_label(started: datetime, backup_type: str, existing: list[str]) -> str:
    """A unique label that sorts after every existing one (FORMAT.md, Labels):
    the start second, or the next free second when that is taken (backups
    started within one second, or a clock that went back)."""
    moment = started.astimezone(timezone.utc).replace(microsecond=0)
    newest = newest_label_time(existing)
    if newest is not None and moment <= newest:
        moment = newest + timedelta(seconds=1)
    return moment.strftime(_LABEL_TIME) + "-" + TYPE_LETTER[backup_type]

