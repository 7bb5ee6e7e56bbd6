"""The policy's SQL assertions on a restored database, judged the same way for
every database kind: the first column of the first row must be true, or,
with `expect`, equal it as text."""

from __future__ import annotations

from decimal import Decimal

from drorch.sources.base import Check


def as_text(value) -> str:
    """A query result as an assertion compares it with `expect`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode(errors="replace")
    return str(value)


def judge(sql: str, database: str, row, expect: str | None, seconds: float, *, int_booleans: bool = False) -> Check:
    """The Check of one assertion whose query returned row (None: no row).
    int_booleans: the database has no boolean type (MariaDB: true is 1)."""
    value = row[0] if row else None
    text = as_text(value)
    if expect is not None:
        ok = text == expect
    else:
        ok = value is True or (int_booleans and not isinstance(value, bool) and value == 1)
    wanted = "true" if expect is None else repr(expect)
    detail = f"in database {database}: returned {text}" + ("" if ok else f", expected {wanted}")
    return Check(f"assertion: {sql}", "passed" if ok else "failed", detail, seconds)


def failed(sql: str, database: str, error: Exception, seconds: float) -> Check:
    text = str(error).strip()
    detail = text.splitlines()[0] if text else type(error).__name__
    return Check(f"assertion: {sql}", "failed", f"in database {database}: the query failed: {detail}", seconds)
