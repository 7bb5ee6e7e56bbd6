"""Policy models: `hosts:` (machines reached over SSH)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from drorch.policy.model_base import Model, _absolute
from drorch.policy.types import Duration, Name, SecretRef


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
