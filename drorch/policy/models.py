"""Policy models (pydantic v2).  Unknown keys are errors everywhere: a typo in
a policy must never silently disable something.

One policy *document* is one YAML file; a policy is all the documents of a
policy directory merged (see loader.py).  Later sections (hosts, daemon,
notify, runbooks) are added beside these.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo,
                      WithJsonSchema, field_validator,
                      model_validator)

from drorch.policy import cron
from drorch.policy.notify_models import Channel, Hooks, Reports, Warnings
from drorch.policy.types import Duration, Name, SecretRef


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    return value


# --- hosts --------------------------------------------------------------------


_OS_USER = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"


class Host(Model):
    """A machine reached over SSH: key authentication only, its host key checked
    against `known_hosts` (an unknown or changed key is refused, never added)."""

    address: str = Field(min_length=1, description="DNS name or IP address")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(pattern=_OS_USER, description="the account drorch logs in as")
    key_file: str = Field(description="absolute path of the private key (OpenSSH or PEM format)")
    key_passphrase: SecretRef | None = Field(None, description="passphrase of key_file, by reference")
    known_hosts: str = Field(description="absolute path of an OpenSSH known_hosts file with this host's key")
    jump: Name | None = Field(None, description="reach this host through another entry of `hosts:` (a bastion)")
    become: str | None = Field(None, pattern=_OS_USER,
                               description="run commands and file access as this OS user (sudo -n -u)")
    connect_timeout: Duration = Field(timedelta(seconds=15), description="give up a connection attempt after this")
    io_timeout: Duration = Field(timedelta(minutes=10),
                                 description="a command silent for this long counts as a lost connection")
    keepalive: Duration = Field(timedelta(seconds=15), description="SSH keepalive interval")
    max_channels: int = Field(8, ge=1, le=64,
                              description="channels open at once on the one connection (sshd MaxSessions is 10)")

    _abs = field_validator("key_file", "known_hosts")(_absolute)


# --- repositories -----------------------------------------------------------


class Compression(Model):
    """zstd compression of every stored object."""

    level: int = Field(3, ge=1, le=19, description="zstd level: 1 fastest ... 19 smallest")


class Encryption(Model):
    """Client-side encryption of everything the repository stores (AES-256-GCM;
    the key is wrapped by one derived from the passphrase).  Chosen when the
    repository is created: an existing repository is never encrypted in place."""

    passphrase: SecretRef = Field(description="the passphrase, by reference: ${env:NAME} or ${file:/path}")


class RepositoryBase(Model):
    """Settings every repository type has."""

    compression: Compression = Compression()
    encryption: Encryption | None = Field(None, description="encrypt the repository (set when it is created)")


class PosixRepository(RepositoryBase):
    """A repository in a local (or mounted) directory: the embedded default."""

    type: Literal["posix"]
    path: str = Field(description="absolute path of the repository directory")
    group: str | None = Field(None, description="share the repository with this OS group (files 0660, "
                                                "directories 2770); default: private to the writing user")

    _abs = field_validator("path")(_absolute)


class ObjectLock(Model):
    """S3 Object Lock (ransomware protection): every object but locks, run records
    and pins is written with a retention date before which nobody, drorch included,
    can delete it.  The bucket must have been created with Object Lock enabled."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        description="COMPLIANCE: nobody can shorten or lift it; GOVERNANCE: holders of "
                    "s3:BypassGovernanceRetention can")
    period: Duration | None = Field(None, description="how long each object is locked; default: derived from "
                                    "the retention of the sources using this repository (`drorch policy check` "
                                    "shows it)")
    full_every: Duration | None = Field(None, description="the longest time between two full backups of a source "
                                        "(how long a chain grows); used to derive the period")
    margin: Duration = Field(timedelta(days=7), description="added to the derived period")


class Retries(Model):
    """How transient storage failures (throttling, 5xx, resets, timeouts) are retried."""

    attempts: int = Field(8, ge=1, le=100, description="tries per request, the first included")
    max_delay: Duration = Field(timedelta(seconds=20), description="the longest wait between two tries")


_STORAGE_CLASSES_REFUSED = {"GLACIER", "DEEP_ARCHIVE"}


class S3Repository(RepositoryBase):
    """A repository in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...)."""

    type: Literal["s3"]
    bucket: str = Field(description="the bucket (it must exist)")
    prefix: str = Field("", description="key prefix of every object, e.g. drorch/ (default: the whole bucket)")
    region: str | None = Field(None, description="the bucket's region (default: boto3's, else us-east-1)")
    endpoint_url: str | None = Field(None, description="e.g. http://127.0.0.1:9000 for MinIO; omit for AWS")
    path_style: bool = Field(False, description="path-style addressing (endpoint/bucket/key), for MinIO and Ceph")
    storage_class: str | None = Field(None, description="e.g. STANDARD, STANDARD_IA, INTELLIGENT_TIERING")
    server_side_encryption: Literal["SSE-S3", "SSE-KMS"] | None = Field(
        None, description="ask the service to encrypt what it stores (SSE-KMS: with kms_key_id)")
    kms_key_id: str | None = Field(None, description="the KMS key for SSE-KMS (default: the account's S3 key)")
    access_key_id: SecretRef | None = Field(None, description="default: boto3's standard credential chain")
    secret_access_key: SecretRef | None = Field(None, validate_default=True)
    session_token: SecretRef | None = Field(None, validate_default=True)
    max_connections: int = Field(8, ge=1, le=128, description="requests at once to this repository, shared by "
                                 "every job of this process")
    object_lock: ObjectLock | None = None
    retries: Retries = Retries()

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", value, re.IGNORECASE):
            raise ValueError(f"{value!r} is not a bucket name: 3 to 63 letters, digits, '.', '-' or '_', "
                             "starting and ending with a letter or digit")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError(f"{value!r}: give the endpoint as http://HOST[:PORT] or https://HOST[:PORT]")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_parts(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if value.strip("/") and any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{value!r}: a prefix is parts separated by single '/', without '.' or '..'")
        return value

    @field_validator("storage_class")
    @classmethod
    def _restorable_class(cls, value: str | None) -> str | None:
        if value in _STORAGE_CLASSES_REFUSED:
            raise ValueError(f"{value} objects cannot be read without a restore request first: use STANDARD, "
                             "STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR")
        return value

    # Checks across keys sit on the later key, so that an error points at a line.
    @field_validator("kms_key_id")
    @classmethod
    def _kms_needs_sse_kms(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("server_side_encryption", "SSE-KMS") != "SSE-KMS":
            raise ValueError("kms_key_id needs server_side_encryption: SSE-KMS")
        return value

    @field_validator("secret_access_key")
    @classmethod
    def _keys_in_pairs(cls, value: Any, info: ValidationInfo) -> Any:
        if "access_key_id" in info.data and (info.data["access_key_id"] is None) != (value is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (boto3's chain)")
        return value

    @field_validator("session_token")
    @classmethod
    def _token_with_keys(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("access_key_id", True) is None:
            raise ValueError("session_token goes with access_key_id and secret_access_key")
        return value


def _tag(field: str):
    def pick(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(field)
        return getattr(value, field, None)
    return pick


Repository = Annotated[
    Union[Annotated[PosixRepository, Tag("posix")], Annotated[S3Repository, Tag("s3")]],
    Discriminator(_tag("type"), custom_error_type="invalid_type",
                  custom_error_message="`type` must be one of: posix, s3"),
]


# --- schedules (drorch daemon) -----------------------------------------------

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


# --- sources ----------------------------------------------------------------


class Retention(Model):
    """Which backups `drorch expire` keeps.  A backup is kept if any rule keeps
    it; what a kept backup depends on is always kept."""

    full: int | None = Field(None, ge=1, description="keep the newest N full backups")
    diff: int | None = Field(None, ge=1, description="keep the newest N differential backups")
    max_age: Duration | None = Field(None, description="keep every backup younger than this")


class Objectives(Model):
    """What the business asks of a source's backups; `drorch check` compares them with reality."""

    rpo: Duration | None = Field(None, description="recovery point objective: the most data (time) that may "
                                 "be lost; `check` fails when the newest recovery point is older")
    rto: Duration | None = Field(None, description="recovery time objective: the longest a restore may take; "
                                 "`check` warns when the last restore verification took longer")


class Assertion(Model):
    """One SQL check run on a restored database during a restore verification."""

    sql: str = Field(min_length=1, description="a query; its first column of the first row is the result")
    expect: str | None = Field(None, description="the result must equal this text; without it the result "
                               "must be true")
    database: str | None = Field(None, description="the database to run it in (default: the connection's)")


class Verify(Model):
    """How backups of this source are verified (`drorch verify`; how often is the daemon's schedule)."""

    level: Literal["structure", "read", "restore"] = Field(
        "read", description="structure: every object is there; read: every byte checked; restore: restored "
                            "into a sandbox and checked by the database")
    host: Name = Field("local", description="where restore verifications restore: `local` (the backup host) "
                       "or an entry of `hosts:` (a verify host over SSH: a restored database is started and "
                       "checked there)")
    sandbox: str | None = Field(None, description="directory on that host to restore into (default: the "
                                "system's temporary directory); each verification uses, then removes, a new "
                                "directory under it")
    max_age: Duration | None = Field(None, description="`check` fails when the last successful restore "
                                     "verification is older than this")
    timeout: Duration = Field(timedelta(hours=1), description="the longest a restored database may take to "
                              "start and recover")
    assertions: list[Assertion] = Field(default_factory=list, description="SQL checks on the restored database")

    _abs = field_validator("sandbox")(lambda v: v if v is None else _absolute(v))


class SourceBase(Model):
    host: Name = Field("local", description="`local` or the name of an entry of `hosts:`")
    repository: Name = Field(description="name of an entry of `repositories:`")
    retention: Retention = Retention()
    copy_to: list[Name] = Field(default_factory=list,
                                description="more repositories that `drorch copy` keeps a copy in (3-2-1)")
    schedule: Schedule | None = Field(None, description="when `drorch daemon` backs it up, verifies, "
                                      "copies and expires")
    hooks: Hooks = Field(Hooks(), description="scripts run before and after backups (hooks/README.md)")
    warnings: Warnings = Field(Warnings(), description="early warnings: mass change, free space")
    objectives: Objectives = Objectives()
    verify: Verify = Verify()


class FilesSource(SourceBase):
    """Files and directories on a host."""

    kind: Literal["files"]
    paths: list[str] = Field(min_length=1, description="absolute paths to back up")
    include: list[str] = Field(default_factory=list,
                               description="globs; when set, only matching files are backed up")
    exclude: list[str] = Field(default_factory=list,
                               description="globs of files or directories (trailing /) to skip")
    one_file_system: bool = Field(False, description="do not cross into other mounted file systems")

    @field_validator("paths")
    @classmethod
    def _paths_absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            _absolute(path)
        return value

    @field_validator("verify")
    @classmethod
    def _no_sql(cls, value: Verify) -> Verify:
        if value.assertions:
            raise ValueError("assertions are SQL run on a restored database: files sources have none "
                             "(a restore verification checks every restored file against the manifest)")
        return value


class PgConnection(Model):
    """How drorch connects to a PostgreSQL server (psycopg)."""

    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "postgres"
    dbname: str = "postgres"
    password: SecretRef | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    connect_timeout: Duration = timedelta(seconds=10)


class PgStandby(Model):
    """The streaming standby a backup may be taken from (backup_from: standby)."""

    host: Name = Field("local", description="`local` or the name of an entry of `hosts:`")
    connection: PgConnection
    pgdata: str | None = Field(None, description="the standby's data directory (default: the source's pgdata)")


class PgArchive(Model):
    """WAL archiving."""

    timeout: Duration = Field(timedelta(seconds=60),
                              description="how long a backup waits for its WAL to reach the archive")
    spool: str | None = Field(None, description="a spool directory for asynchronous wal-push/wal-get "
                                                "(restore_command then uses --async)")
    prefetch: int = Field(8, ge=0, le=256, description="with spool: WAL segments wal-get fetches ahead")


class PostgresSource(SourceBase):
    """A PostgreSQL cluster: physical base backups plus WAL, or logical dumps."""

    kind: Literal["postgres"]
    mode: Literal["physical", "logical"] = "physical"
    pgdata: str | None = Field(None, description="the data directory (required for mode physical)")
    connection: PgConnection = PgConnection()
    backup_from: Literal["primary", "standby"] = "primary"
    standby: PgStandby | None = None
    os_user: str = Field("postgres", description="the OS user that owns the data directory")
    bin_dir: str = Field("/usr/lib/postgresql/15/bin", description="where pg_dump, pg_ctl... live")
    drorch_command: str | None = Field(
        None, description="how the PostgreSQL server runs drorch (restore_command); default: this drorch")
    databases: list[str] = Field(default_factory=list, description="mode logical: these databases (default all)")
    archive: PgArchive = PgArchive()

    @model_validator(mode="after")
    def _consistent(self) -> "PostgresSource":
        if self.mode == "physical" and not self.pgdata:
            raise ValueError("mode physical needs `pgdata` (the data directory)")
        if self.pgdata:
            _absolute(self.pgdata)
        if self.backup_from == "standby" and self.standby is None:
            raise ValueError("backup_from: standby needs a `standby:` section (host, connection)")
        if self.mode == "logical" and self.retention.diff is not None:
            raise ValueError("mode logical takes full backups only: remove retention.diff")
        return self


class MariadbConnection(Model):
    """How drorch and mariabackup reach a MariaDB server (TCP, or a unix socket)."""

    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    socket: str | None = Field(None, description="a unix socket on the database host (instead of host/port)")
    user: str = "root"
    password: SecretRef | None = None


class MariadbSource(SourceBase):
    """A MariaDB (10.11) server: physical backups with mariabackup plus binlogs, or logical dumps."""

    kind: Literal["mariadb"]
    mode: Literal["physical", "logical"] = "physical"
    datadir: str | None = Field(None, description="the server's datadir (required for mode physical)")
    connection: MariadbConnection = MariadbConnection()
    backup_from: Literal["primary", "replica"] = "primary"
    os_user: str = Field("mysql", description="the OS user that owns the datadir")
    backup_options: list[str] = Field(
        default_factory=lambda: ["--ftwrl-wait-timeout=60", "--ftwrl-wait-threshold=60"],
        description="extra mariabackup options (default: give up instead of blocking writers for long)")
    throttle: int | None = Field(None, ge=1, description="mariabackup --throttle (I/O operations per second)")
    databases: list[str] = Field(default_factory=list, description="mode logical: these databases (default all)")

    @model_validator(mode="after")
    def _consistent(self) -> "MariadbSource":
        if self.mode == "physical" and not self.datadir:
            raise ValueError("mode physical needs `datadir`")
        if self.datadir:
            _absolute(self.datadir)
        if self.mode == "logical" and self.retention.diff is not None:
            raise ValueError("mode logical takes full backups only: remove retention.diff")
        return self


Source = Annotated[
    Union[Annotated[FilesSource, Tag("files")], Annotated[PostgresSource, Tag("postgres")],
          Annotated[MariadbSource, Tag("mariadb")]],
    Discriminator(_tag("kind"), custom_error_type="invalid_kind",
                  custom_error_message="`kind` must be one of: files, postgres, mariadb"),
]


# --- one document -------------------------------------------------------------


class PolicyDocument(Model):
    """The top level of one policy file."""

    hosts: dict[Name, Host] = Field(default_factory=dict)
    repositories: dict[Name, Repository] = Field(default_factory=dict)
    sources: dict[Name, Source] = Field(default_factory=dict)
    daemon: Daemon | None = Field(None, description="settings of `drorch daemon` (in one file only)")
    notify: list[Channel] = Field(default_factory=list, description="where notifications go (webhooks, "
                                  "e-mail), by severity; the lists of all policy files add up")
    reports: Reports | None = Field(None, description="reports the daemon sends (in one file only)")
