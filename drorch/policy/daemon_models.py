"""Policy models: a source's `schedule:` and the `daemon:` section (drorch daemon)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, field_validator

from drorch.policy import cron
from drorch.policy.model_base import Model, _absolute
from drorch.policy.types import Duration, Name


AFTER_BACKUP = "after_backup"
_CRON_SCHEMA = {"type": "string", "description": "cron: minute hour day-of-month month day-of-week "
                "(or 6 fields, second first); day-of-month and day-of-week must BOTH match"}


def _cron_or_after_backup(value: Any) -> str:
    if value in (AFTER_BACKUP, "off"):
        return value
    return cron.check(value)


CronExpr = Annotated[str, AfterValidator(cron.check), WithJsonSchema(_CRON_SCHEMA)]
CronOrAfterBackup = Annotated[str, AfterValidator(_cron_or_after_backup),
                              WithJsonSchema({**_CRON_SCHEMA, "description": "after_backup (default), off, "
                                              "or a cron expression"})]
TimeZone = Annotated[str, AfterValidator(cron.check_zone),
                     WithJsonSchema({"type": "string", "description": "an IANA zone, e.g. Europe/Berlin"})]


class Schedule(Model):
    """When `drorch daemon` runs what for this source (cron expressions in `timezone`).
    Day-of-month and day-of-week together must BOTH match: "0 1 1-7 * sun" is the
    first Sunday (classic cron would run on days 1-7 and on every Sunday)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    timezone: TimeZone = Field("UTC", description="the zone the cron expressions are read in")
    full: CronExpr | None = Field(None, description="full backups, e.g. \"0 1 1-7 * sun\" (first Sunday)")
    diff: CronExpr | None = Field(None, description="differential backups, e.g. \"0 1 8-31 * sun\"")
    incr: CronExpr | None = Field(None, description="incremental backups, e.g. \"0 1 * * mon-sat\"")
    verify: CronExpr | None = Field(None, description="verification of the latest backup (drorch verify)")
    drill: CronExpr | None = Field(None, description="a DR drill (`drorch runbook run ID --mode drill`) of "
                                   "every runbook whose topology.source is this source")
    expire: CronOrAfterBackup = Field(AFTER_BACKUP, description="retention: after_backup (after each "
                                      "successful backup), off, or a cron expression")
    copy_: CronOrAfterBackup = Field(AFTER_BACKUP, alias="copy", description="copies to copy_to: after_backup, "
                                     "off, or a cron expression")
    max_full_interval: Duration | None = Field(None, description="an incr or diff runs as a full when the "
                                               "last full is older than this")
    max_diff_interval: Duration | None = Field(None, description="an incr runs as a diff when the last diff "
                                               "or full is older than this")

    @property
    def backups(self) -> dict[str, str]:
        """{type: cron} of the backup schedules that are set."""
        return {kind: getattr(self, kind) for kind in ("full", "diff", "incr") if getattr(self, kind)}


_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


class Daemon(Model):
    """`drorch daemon`: its endpoint, limits and timings (one `daemon:` section in all policy files)."""

    listen: str = Field("127.0.0.1:9477", description="HOST:PORT of /healthz, /metrics and /status, or off")
    max_jobs: int = Field(2, ge=1, le=256, description="jobs running at once, in all")
    per_host_jobs: int | dict[Name, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="backups at once per source host: a number for every host, or {host: number}")
    stop_grace: Duration = Field(timedelta(seconds=30), description="on SIGTERM, how long running jobs may "
                                 "finish before they are aborted")
    catchup_grace: Duration = Field(timedelta(hours=12), description="a slot missed (daemon down) is run "
                                    "once when it is at most this old")
    lease: Duration = Field(timedelta(seconds=60), description="lock lease: renewed while a job runs, "
                            "taken over by another host only after it expired")
    state_dir: str = Field("/var/lib/drorch", description="the daemon's own files (a copy of the policies "
                           "in force); the repository holds the real state")

    _abs = field_validator("state_dir")(_absolute)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if value != "off" and not (match and 0 < int(match.group(2)) < 65536):
            raise ValueError(f"{value!r}: write HOST:PORT (e.g. 127.0.0.1:9477, [::1]:9477) or off")
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=2):
            raise ValueError("a lease shorter than 2s would expire between renewals")
        return value
