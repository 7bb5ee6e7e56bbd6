"""Policy models of hooks, early warnings, notifications and reports (issue 9).

Kept beside models.py (which adds them to sources and to the top level) so
that the sections of each area stay in one place.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, PlainValidator, \
    Tag, WithJsonSchema, field_validator

from drorch.policy import cron
from drorch.policy.types import Duration, Name, Secret, SecretRef, _to_secret

SEVERITIES = ("I", "II", "III", "IV")  # I is the most severe


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Severity = Annotated[Literal["I", "II", "III", "IV"], WithJsonSchema({
    "type": "string", "enum": list(SEVERITIES),
    "description": "I: no restorable backup within the RPO, a restore verification failed, data lost in a "
                   "failover; II: a backup or copy failed; III: warnings; IV: information"})]


# --- hooks ------------------------------------------------------------------


class Hooks(_Model):
    """Scripts run on the host drorch runs on, around this source's backups and
    verifications (the contract: hooks/README.md).  A relative path is read from
    the directory of the policy files."""

    pre_backup: list[str] = Field(default_factory=list, description="before each backup, after the source's lock "
                                  "is taken; a non-zero exit aborts the backup (recorded as failed)")
    post_backup: list[str] = Field(default_factory=list, description="after each committed backup; a failure is "
                                   "reported and never makes the backup bad")
    on_failure: list[str] = Field(default_factory=list, description="after a backup failed (not for backups "
                                  "aborted by a daemon shutdown or stopped by another one's lock)")
    post_verify: list[str] = Field(default_factory=list, description="after each verification (passed or failed)")
    timeout: Duration = Field(timedelta(minutes=5), description="a hook still running after this is killed "
                              "and counts as failed")

    @field_validator("pre_backup", "post_backup", "on_failure", "post_verify")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.strip() or any(c in path for c in "\n\0"):
                raise ValueError(f"{path!r} is not a path of a script")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a hook timeout must be longer than 0s")
        return value


# --- early warnings -------------------------------------------------------------

_FREE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|b|kib|mib|gib|tib|kb|mb|gb|tb)\s*$", re.IGNORECASE)
_UNIT = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
         "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12}


def parse_min_free(text: str) -> tuple[float | None, int | None]:
    """'10%' -> (10.0, None); '50GiB' -> (None, 53687091200).  ValueError when neither."""
    match = _FREE.match(str(text))
    if not match:
        raise ValueError(f"{text!r}: write a share of the file system (e.g. 10%) or a size (e.g. 50GiB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if number > 100:
            raise ValueError(f"{text!r}: a share is at most 100%")
        return number, None
    return None, int(number * _UNIT[unit])


def _check_min_free(value: Any) -> str:
    parse_min_free(value)
    return str(value)


class Warnings(_Model):
    """Early warnings about this source (notified as severity III)."""

    change_factor: float = Field(5.0, gt=1, description="warn when a backup stores more than this many times "
                                 "the median of the source's last 7 backups of the same type (mass change, or "
                                 "encryption by ransomware)")
    zero_change: bool = Field(True, description="warn when a backup stores nothing although the last backups "
                              "of its type all stored something")
    min_free: Annotated[str, AfterValidator(_check_min_free)] = Field(
        "10%", description="warn when the file system of the repository (posix) or of the backup host's spool "
                           "and state directories has less free space: a share (10%) or a size (50GiB)")


# --- notifications ------------------------------------------------------------

def _secret_or_url(value: Any) -> Secret | str:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str) and value.strip().startswith("${"):
        return _to_secret(value)
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value.strip()):
        raise ValueError("a webhook url is http(s)://HOST/PATH, or a reference to one (\"${env:NAME}\" or "
                         "\"${file:/path}\") when it holds a token")
    return value.strip()


UrlOrSecret = Annotated[
    Union[Secret, str], PlainValidator(_secret_or_url),
    PlainSerializer(lambda v: v.ref if isinstance(v, Secret) else v, return_type=str),
    WithJsonSchema({"type": "string", "description": "http(s)://HOST/PATH, or ${env:NAME} / ${file:/path} "
                                                     "holding it (webhook URLs with tokens are secrets)"})]


class ChannelBase(_Model):
    name: Name | None = Field(None, description="how logs and reports name this channel (default: its type "
                              "and position, e.g. webhook#1)")
    min_severity: Severity = Field("II", description="send problems of this severity and worse (I is the worst)")
    repeat: Duration = Field(timedelta(hours=12), description="remind of a problem that lasts, this often")
    max_per_hour: int = Field(20, ge=1, le=10000, description="at most this many messages an hour; the rest "
                              "are counted and said in the next message")
    daily_report: bool = Field(True, description="send the daily report here (reports.daily.notify)")
    timeout: Duration = Field(timedelta(seconds=20), description="give up one delivery after this")


class WebhookChannel(ChannelBase):
    """A JSON POST: `text` (what Slack and Teams incoming webhooks show) plus the facts."""

    type: Literal["webhook"]
    url: UrlOrSecret = Field(description="where to POST")


_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_SMTP = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


Address = Annotated[str, AfterValidator(_address)]


class EmailChannel(ChannelBase):
    """E-mail through an SMTP server (STARTTLS and authentication by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["email"]
    smtp: str = Field(description="HOST:PORT of the SMTP server (port default 587)")
    from_: Address = Field(alias="from", description="the sender address")
    to: list[Address] = Field(min_length=1, description="recipients")
    user: str | None = Field(None, description="SMTP user (AUTH after STARTTLS)")
    password: SecretRef | None = Field(None, description="SMTP password, by reference")
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="starttls (port 587), ssl (implicit TLS, port 465), or none (no encryption: "
                                "only on a trusted local relay)")
    ca_file: str | None = Field(None, description="PEM file of the CA that signed the server's certificate "
                                "(default: the system's CAs)")

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        match = _SMTP.match(value)
        if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
            raise ValueError(f"{value!r}: write HOST:PORT, e.g. mail.internal:587")
        return value

    @field_validator("password")
    @classmethod
    def _password_needs_user(cls, value, info):
        if value is not None and info.data.get("user") is None:
            raise ValueError("a password needs `user`")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        match = _SMTP.match(self.smtp)
        default = 465 if self.security == "ssl" else 587
        return match.group(1).strip("[]"), int(match.group(2)) if match.group(2) else default


def _channel_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


Channel = Annotated[
    Union[Annotated[WebhookChannel, Tag("webhook")], Annotated[EmailChannel, Tag("email")]],
    Discriminator(_channel_type, custom_error_type="invalid_type",
                  custom_error_message="`type` must be one of: webhook, email"),
]


# --- reports ------------------------------------------------------------------


def _clock(value: str) -> str:
    match = re.match(r"^(\d{1,2}):(\d{2})$", value.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"{value!r}: write the time of day as HH:MM, e.g. 07:30")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


class DailyReport(_Model):
    """The daily report: what ran in the last 24 hours, sent by the daemon."""

    at: Annotated[str, AfterValidator(_clock)] = Field(description="time of day HH:MM, in `timezone`")
    timezone: Annotated[str, AfterValidator(cron.check_zone)] = Field("UTC", description="an IANA zone")
    notify: bool = Field(True, description="send it to the `notify:` channels (those with daily_report)")


class Reports(_Model):
    daily: DailyReport | None = None
