"""Small value types shared by policy models: durations, names, secrets."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema

from drorch.errors import DrorchError
from drorch.timefmt import format_duration

_DURATION_PART = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any) -> timedelta:
    """'35d', '2h', '1h30m', '90s' -> timedelta.  Bare numbers are refused:
    '30' could mean seconds or days, and guessing is how backups get lost."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration is a string like 30s, 15m, 2h, 35d or 1w")
    text = value.strip().lower().replace(" ", "")
    pos, seconds = 0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 15m, 2h, 35d, 1w or 1h30m")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+\s*[wdhms]\s*)+$",
                    "description": "a duration such as 30s, 15m, 2h, 35d, 1w"}),
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_' or '-' "
                         "(at most 63, starting with a letter or digit)")
    return value


Name = Annotated[str, AfterValidator(_check_name)]

_SECRET_REF = re.compile(r"^\$\{(env|file):([^}]+)\}$")


class Secret:
    """A secret given by reference: ${env:NAME} or ${file:/path}.

    The reference is what gets printed or serialised; the value is read only
    when used, so a policy can be checked on a machine that lacks the secret.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: str):
        self.ref = ref

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    @classmethod
    def parse(cls, ref: str) -> "Secret":
        """A reference from outside a policy (e.g. a command-line option); ValueError if malformed."""
        return _to_secret(ref)

    def resolve(self) -> str:
        kind, name = _SECRET_REF.match(self.ref).groups()
        if kind == "env":
            if name not in os.environ:
                raise DrorchError(f"secret {self.ref}: environment variable {name} is not set",
                                  f"export {name}=... in the environment drorch runs in")
            return os.environ[name]
        try:
            with open(name, encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except OSError as exc:
            raise DrorchError(f"secret {self.ref}: cannot read {name}: {exc.strerror}",
                              "check that the file exists and that this user may read it") from None


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not _SECRET_REF.match(value.strip()):
        raise ValueError("secrets are given by reference, never inline: write "
                         "\"${env:NAME}\" or \"${file:/path/to/secret}\"")
    return Secret(value.strip())


SecretRef = Annotated[
    Secret,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.ref, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\$\{(env|file):[^}]+\}$",
                    "description": "a reference: ${env:NAME} or ${file:/path}"}),
]
