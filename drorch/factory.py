"""Turn policy models into the objects that do the work (config is read at the edges)."""

from __future__ import annotations

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
        return PosixStorage(model.path)
    raise UsageError(f"repository {repository}: type {model.type} is not supported yet")


def open_repository(policy: Policy, repository: str, *, create: bool = False) -> Repository:
    """Open a repository; create=True initialises an empty location (first write)."""
    model = policy.repositories[repository]
    storage = storage_for(policy, repository)
    if create:
        return Repository.open_or_init(storage, compression_level=model.compression.level)
    return Repository.open(storage, compression_level=model.compression.level)


_open_hosts: list = []


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
    """`local`, or an entry of `hosts:` (connected on first use; close_hosts() closes it)."""
    if name == "local":
        return LocalHost()
    if name not in policy.hosts:
        known = ", ".join(["local", *sorted(policy.hosts)])
        raise UsageError(f"no host named {name!r} in {policy.path} (hosts: {known})")
    from drorch.hosts.remote import SshHost  # paramiko is imported only when a remote host is used

    host = SshHost(ssh_config(policy, name))
    _open_hosts.append(host)
    return host


def close_hosts() -> None:
    while _open_hosts:
        _open_hosts.pop().close()


def make_source(policy: Policy, name: str):
    model = source_policy(policy, name)
    host = make_host(policy, model.host)
    if model.kind == "files":
        return FilesSource(name, host, model.paths, model.include, model.exclude, model.one_file_system)
    raise UsageError(f"source {name}: kind {model.kind} is not supported yet")


def retention_rules(policy: Policy, source: str) -> Rules:
    model = source_policy(policy, source).retention
    return Rules(full=model.full, diff=model.diff, max_age=model.max_age)
