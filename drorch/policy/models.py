"""Policy models (pydantic v2).  Unknown keys are errors everywhere: a typo in
a policy must never silently disable something.

One policy *document* is one YAML file; a policy is all the documents of a
policy directory merged (see loader.py).  Later sections (hosts, daemon,
notify, runbooks) are added beside these.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from drorch.policy.types import Duration, Name, SecretRef


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    return value


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

    _abs = field_validator("path")(_absolute)


def _tag(field: str):
    def pick(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get(field)
        return getattr(value, field, None)
    return pick


Repository = Annotated[
    Union[Annotated[PosixRepository, Tag("posix")]],
    Discriminator(_tag("type"), custom_error_type="invalid_type",
                  custom_error_message="`type` must be one of: posix"),
]


# --- sources ----------------------------------------------------------------


class Retention(Model):
    """Which backups `drorch expire` keeps.  A backup is kept if any rule keeps
    it; what a kept backup depends on is always kept."""

    full: int | None = Field(None, ge=1, description="keep the newest N full backups")
    diff: int | None = Field(None, ge=1, description="keep the newest N differential backups")
    max_age: Duration | None = Field(None, description="keep every backup younger than this")


class SourceBase(Model):
    host: Name = Field("local", description="`local` or the name of an entry of `hosts:`")
    repository: Name = Field(description="name of an entry of `repositories:`")
    retention: Retention = Retention()
    copy_to: list[Name] = Field(default_factory=list,
                                description="more repositories that `drorch copy` keeps a copy in (3-2-1)")


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


Source = Annotated[
    Union[Annotated[FilesSource, Tag("files")]],
    Discriminator(_tag("kind"), custom_error_type="invalid_kind",
                  custom_error_message="`kind` must be one of: files"),
]


# --- one document -------------------------------------------------------------


class PolicyDocument(Model):
    """The top level of one policy file."""

    repositories: dict[Name, Repository] = Field(default_factory=dict)
    sources: dict[Name, Source] = Field(default_factory=dict)
