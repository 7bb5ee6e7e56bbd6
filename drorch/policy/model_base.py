"""The base of every policy model, and small helpers the model modules share."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    return value


def _tag(field: str):
    def pick(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(field)
        return getattr(value, field, None)
    return pick
