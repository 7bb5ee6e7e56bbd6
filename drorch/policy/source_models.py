"""Policy models: `sources:` (files, PostgreSQL, MariaDB) and what every source has
(retention, objectives, verification, schedule, hooks, warnings)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from drorch.policy.daemon_models import Schedule
from drorch.policy.model_base import Model, _absolute, _tag
from drorch.policy.notify_models import Hooks, Warnings
from drorch.policy.types import Duration, Name, SecretRef


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
