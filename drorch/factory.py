"""Turn policy models into the objects that do the work (config is read at the edges)."""

from __future__ import annotations

import os
import shutil
import sys

from drorch.engine.retention import Rules
from drorch.errors import UsageError
from drorch.hosts.local import LocalHost
from drorch.policy import Policy
from drorch.repo.repository import Repository
from drorch.sources.files import FilesSource
from drorch.storage.posix import PosixStorage


def source_policy(policy: Policy, name: str):
    if name not in policy.sources:
        known = ", ".join(sorted(policy.sources)) or "none"
        raise UsageError(f"no source named {name!r} in {policy.path} (sources: {known})")
    return policy.sources[name]


def repository_name(policy: Policy, source: str | None, repository: str | None) -> str:
    if repository:
        if repository not in policy.repositories:
            known = ", ".join(sorted(policy.repositories)) or "none"
            raise UsageError(f"no repository named {repository!r} in {policy.path} (repositories: {known})")
        return repository
    if source:
        return source_policy(policy, source).repository
    if len(policy.repositories) == 1:
        return next(iter(policy.repositories))
    raise UsageError("this policy has several repositories: say which with --source or --repository")


def storage_for(policy: Policy, repository: str):
    model = policy.repositories[repository]
    if model.type == "posix":
        return PosixStorage(model.path, group=model.group)
    if model.type == "s3":
        return s3_storage(policy, repository)
    raise UsageError(f"repository {repository}: type {model.type} is not supported yet")


def s3_storage(policy: Policy, repository: str):
    """S3Storage, retried (retrying.py), with background uploads of packs (deferred.py)."""
    from drorch.policy.object_lock import lock_period
    from drorch.repo.layout import MUTABLE_PREFIXES
    from drorch.storage.deferred import DeferredPuts
    from drorch.storage.retrying import RetryingStorage
    from drorch.storage.s3 import ObjectLockSettings, S3Storage, make_client

    model = policy.repositories[repository]
    secret = lambda ref: ref.resolve() if ref is not None else None  # noqa: E731
    client = make_client(region=model.region, endpoint_url=model.endpoint_url, path_style=model.path_style,
                         access_key_id=secret(model.access_key_id),
                         secret_access_key=secret(model.secret_access_key),
                         session_token=secret(model.session_token), max_connections=model.max_connections)
    lock = None
    if model.object_lock is not None:
        lock = ObjectLockSettings(model.object_lock.mode, lock_period(policy, repository).period,
                                  MUTABLE_PREFIXES)
    sse = {"SSE-S3": "AES256", "SSE-KMS": "aws:kms", None: None}[model.server_side_encryption]
    storage = S3Storage(client, model.bucket, model.prefix, endpoint=model.endpoint_url,
                        storage_class=model.storage_class, sse=sse, kms_key_id=model.kms_key_id,
                        max_connections=model.max_connections, object_lock=lock)
    retrying = RetryingStorage(storage, attempts=model.retries.attempts,
                               max_delay=model.retries.max_delay.total_seconds())
    return DeferredPuts(retrying, workers=model.max_connections)


def open_repository(policy: Policy, repository: str, *, create: bool = False) -> Repository:
    """Open a repository; create=True initialises an empty location (first write)."""
    model = policy.repositories[repository]
    storage = storage_for(policy, repository)
    passphrase = repository_passphrase(policy, repository)
    if create:
        return Repository.open_or_init(storage, compression_level=model.compression.level,
                                       passphrase=passphrase)
    return Repository.open(storage, compression_level=model.compression.level, passphrase=passphrase)


def repository_passphrase(policy: Policy, repository: str) -> str | None:
    """The passphrase the policy gives a repository (None: not encrypted)."""
    encryption = policy.repositories[repository].encryption
    return None if encryption is None else encryption.passphrase.resolve()


def copy_targets(policy: Policy, source: str, to: str | None) -> list[str]:
    """The repositories `drorch copy` writes a source's copies to: --to, or its copy_to."""
    model = source_policy(policy, source)
    if to is None:
        if not model.copy_to:
            raise UsageError(f"source {source} has no `copy_to` repositories in {policy.path}",
                             "name one with --to REPOSITORY, or add `copy_to: [NAME]` to the source")
        return list(model.copy_to)
    name = repository_name(policy, None, to)
    if name == model.repository:
        raise UsageError(f"repository {name} is the main repository of source {source}: it cannot be "
                         "a copy of itself", "name another repository with --to")
    return [name]


_open_hosts: dict[tuple[int, str], tuple[Policy, object]] = {}  # one connection per host and policy


def ssh_config(policy: Policy, name: str):
    """The SSH settings of a `hosts:` entry, its jump hosts included."""
    from drorch.hosts.ssh import SshConfig

    model = policy.hosts[name]
    return SshConfig(
        name=name, address=model.address, port=model.port, user=model.user, key_file=model.key_file,
        known_hosts=model.known_hosts,
        passphrase=model.key_passphrase.resolve if model.key_passphrase else None,
        jump=ssh_config(policy, model.jump) if model.jump else None, become=model.become,
        connect_timeout=model.connect_timeout.total_seconds(), io_timeout=model.io_timeout.total_seconds(),
        keepalive=model.keepalive.total_seconds(), max_channels=model.max_channels)


def make_host(policy: Policy, name: str):
    """`local`, or an entry of `hosts:`: connected on first use, shared by everything
    that asks for it with the same policy until close_hosts()."""
    if name == "local":
        return LocalHost()
    if name not in policy.hosts:
        known = ", ".join(["local", *sorted(policy.hosts)])
        raise UsageError(f"no host named {name!r} in {policy.path} (hosts: {known})")
    key = (id(policy), name)
    if key not in _open_hosts:
        from drorch.hosts.remote import SshHost  # paramiko is imported only when a remote host is used

        _open_hosts[key] = (policy, SshHost(ssh_config(policy, name)))  # (the policy kept: ids stay unique)
    return _open_hosts[key][1]


def close_hosts() -> None:
    while _open_hosts:
        _open_hosts.popitem()[1][1].close()


def make_source(policy: Policy, name: str):
    model = source_policy(policy, name)
    if model.kind == "files":
        host = make_host(policy, model.host)
        return FilesSource(name, host, model.paths, model.include, model.exclude, model.one_file_system)
    if model.kind == "postgres":
        return _postgres_source(policy, name, model)
    if model.kind == "mariadb":
        return _mariadb_source(policy, name, model)
    raise UsageError(f"source {name}: kind {model.kind} is not supported yet")


def pg_params(model):
    from drorch.sources.pg_conn import PgParams  # psycopg only when a PostgreSQL source is used

    return PgParams(host=model.host, port=model.port, user=model.user, dbname=model.dbname,
                    password=model.password.resolve() if model.password else None, sslmode=model.sslmode,
                    connect_timeout=int(model.connect_timeout.total_seconds()))


def this_drorch() -> str:
    """A command line that runs this drorch (for PostgreSQL's restore_command)."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "drorch" and os.access(argv0, os.X_OK):
        return argv0
    beside = os.path.join(os.path.dirname(sys.executable), "drorch")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("drorch") or f"{sys.executable} -m drorch.cli.main"


def _postgres_source(policy: Policy, name: str, model):
    from drorch.sources.postgres import PgSettings, PostgresSource

    if model.mode == "logical":
        from drorch.sources.pg_logical import PgLogicalSource

        return PgLogicalSource(name, pg_params(model.connection), model.bin_dir, model.databases, model.os_user)

    standby = model.standby
    from_standby = model.backup_from == "standby"
    settings = PgSettings(
        pgdata=(standby.pgdata or model.pgdata) if from_standby else model.pgdata,
        primary=pg_params(model.connection),
        standby=pg_params(standby.connection) if standby else None,
        backup_from=model.backup_from, os_user=model.os_user,
        drorch_command=model.drorch_command or this_drorch(),
        policy_path=str(policy.path.resolve()),
        archive_timeout=model.archive.timeout.total_seconds(), spool=model.archive.spool,
        prefetch=model.archive.prefetch, bin_dir=model.bin_dir)
    host = make_host(policy, standby.host if from_standby else model.host)
    return PostgresSource(name, host, settings)


def _mariadb_source(policy: Policy, name: str, model):
    from drorch.sources.mariadb import MariadbSettings, MariadbSource
    from drorch.sources.mariadb_logical import MariadbLogicalSource

    conn = model.connection
    settings = MariadbSettings(datadir=model.datadir or "", host=conn.host, port=conn.port, socket=conn.socket,
                               user=conn.user, password=conn.password.resolve() if conn.password else None,
                               os_user=model.os_user, backup_options=list(model.backup_options),
                               throttle=model.throttle, backup_from=model.backup_from)
    cls = MariadbLogicalSource if model.mode == "logical" else MariadbSource
    return cls(name, make_host(policy, model.host), settings, model.databases)


def retention_rules(policy: Policy, source: str) -> Rules:
    model = source_policy(policy, source).retention
    return Rules(full=model.full, diff=model.diff, max_age=model.max_age)


def make_hooks(policy: Policy, source: str):
    """A source's hook scripts with what every one of its hooks is told (hooks/README.md)."""
    from drorch.engine.hooks import Hooks

    model = source_policy(policy, source)
    hooks = model.hooks
    scripts = {event: list(getattr(hooks, event)) for event in ("pre_backup", "post_backup", "on_failure",
                                                                 "post_verify")}
    env = {"DRORCH_SOURCE": source, "DRORCH_SOURCE_KIND": model.kind, "DRORCH_SOURCE_HOST": model.host,
           "DRORCH_REPOSITORY": model.repository, "DRORCH_POLICY": str(policy.path.resolve())}
    return Hooks(scripts, hooks.timeout.total_seconds(), env, policy.base_dir.resolve())
def verify_settings(policy: Policy, source: str):
    """A source's `verify:` and `objectives:` as the verify engine takes them."""
    from drorch.engine.verify import VerifySettings

    model = source_policy(policy, source)
    verify, rto = model.verify, model.objectives.rto
    return VerifySettings(level=verify.level, host=verify.host, sandbox=verify.sandbox,
                          timeout=verify.timeout.total_seconds(),
                          assertions=[(a.sql, a.expect, a.database) for a in verify.assertions],
                          rto=rto.total_seconds() if rto else None)
