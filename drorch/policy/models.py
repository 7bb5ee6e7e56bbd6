"""Policy models (pydantic v2).  Unknown keys are errors everywhere: a typo in
a policy must never silently disable something.

One policy *document* is one YAML file; a policy is all the documents of a
policy directory merged (see loader.py).  Each section has a module of its own
beside this one (host_models, repository_models, source_models, daemon_models,
notify_models); this module holds the top level and names them all, so
`from drorch.policy.models import X` works for every model.
"""

from __future__ import annotations

from pydantic import Field

from drorch.policy.daemon_models import (AFTER_BACKUP, CronExpr, CronOrAfterBackup, Daemon, Schedule,
                                         TimeZone)
from drorch.policy.host_models import Host
from drorch.policy.model_base import Model, _absolute, _tag
from drorch.policy.notify_models import Channel, Hooks, Reports, Warnings
from drorch.policy.repository_models import (Compression, Encryption, ObjectLock, PosixRepository, Repository,
                                             RepositoryBase, Retries, S3Repository)
from drorch.policy.source_models import (Assertion, FilesSource, MariadbConnection, MariadbSource, Objectives,
                                         PgArchive, PgConnection, PgStandby, PostgresSource, Retention, Source,
                                         SourceBase, Verify)
from drorch.policy.types import Name

__all__ = [
    "AFTER_BACKUP", "Assertion", "Channel", "Compression", "CronExpr", "CronOrAfterBackup", "Daemon",
    "Encryption", "FilesSource", "Hooks", "Host", "MariadbConnection", "MariadbSource", "Model", "Objectives",
    "ObjectLock", "PgArchive", "PgConnection", "PgStandby", "PolicyDocument", "PosixRepository",
    "PostgresSource", "Reports", "Repository", "RepositoryBase", "Retention", "Retries", "S3Repository",
    "Schedule", "Source", "SourceBase", "TimeZone", "Verify", "Warnings", "_absolute", "_tag",
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
