"""Policy models: `repositories:` (posix directories, S3 buckets) and their settings."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator

from drorch.policy.model_base import Model, _absolute, _tag
from drorch.policy.types import Duration, SecretRef


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


Repository = Annotated[
    Union[Annotated[PosixRepository, Tag("posix")], Annotated[S3Repository, Tag("s3")]],
    Discriminator(_tag("type"), custom_error_type="invalid_type",
                  custom_error_message="`type` must be one of: posix, s3"),
]
