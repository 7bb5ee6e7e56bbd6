"""A repository in S3-compatible object storage (AWS, MinIO, Ceph RGW, moto).

Each key is one object under the prefix.  A PUT is atomic and durable when it
returns, so sync() has nothing to do; create-if-absent is a conditional PUT
(If-None-Match: *, 412 -> AlreadyExists).  Objects above multipart_threshold
go up in parts sized so that any object fits in S3's 10,000 parts; a failed
multipart upload is aborted, and cleanup_interrupted() removes those a crash
left behind.  Every request takes a slot of a semaphore shared by all
storages of one endpoint, bucket and prefix in this process (max_connections).

Errors are sorted here: transient ones (throttling, 5xx, resets, timeouts)
are raised as TransientError for retrying.py to retry; permanent ones (403,
NoSuchBucket, a wrong key id) as a StorageError saying what to fix.

With Object Lock, every object except those under exempt prefixes (locks,
run records, pins: rewritten and removed in normal use) is written with a
retain-until date; delete() removes every version of a key, and refuses with
ObjectLocked, before trying, while any version is still retained.
"""

from __future__ import annotations

import http.client
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import boto3
import urllib3.exceptions
from botocore import exceptions as bx
from botocore.config import Config

from drorch.errors import NotFoundError, StorageError
from drorch.storage.base import AlreadyExists, ObjectInfo, ObjectLocked, TransientError, check_key, check_prefix

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
LEGAL_HOLD = datetime.max.replace(tzinfo=timezone.utc)  # locked_until() of an object under a legal hold

TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestLimitExceeded", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "BadDigest", "IncompleteBody", "XAmzContentSHA256Mismatch",
}
CHECKSUM_FIELDS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256")
PERMISSIONS = ("s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket (with object_lock also "
               "s3:ListBucketVersions, s3:DeleteObjectVersion, s3:GetObjectRetention, s3:PutObjectRetention)")


@dataclass(frozen=True)
class ObjectLockSettings:
    mode: str  # GOVERNANCE | COMPLIANCE
    period: timedelta  # each object is retained this long after it is written
    exempt_prefixes: tuple[str, ...] = ()  # keys rewritten or removed in normal use


class _RangeNotSatisfiable(StorageError):
    """416: the range starts at or past the end of an existing object."""


def make_client(*, region: str | None = None, endpoint_url: str | None = None, path_style: bool = False,
                access_key_id: str | None = None, secret_access_key: str | None = None,
                session_token: str | None = None, max_connections: int = 8,
                connect_timeout: float = 10, read_timeout: float = 60):
    """A boto3 S3 client.  Without keys, boto3's standard chain finds credentials
    (environment, ~/.aws, instance role).  Its own retries are off: retrying.py retries."""
    session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                    aws_session_token=session_token, region_name=region)
    config = Config(region_name=session.region_name or "us-east-1",
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=max_connections, connect_timeout=connect_timeout,
                    read_timeout=read_timeout, tcp_keepalive=True,
                    s3={"addressing_style": "path" if path_style else "auto"})
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def normalize_prefix(prefix: str) -> str:
    """'' or 'a/b/' (no leading slash, one trailing slash, no '.'/'..' parts)."""
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    if any(part in ("", ".", "..") for part in prefix.split("/")) or "\\" in prefix or "\0" in prefix:
        raise ValueError(f"invalid S3 prefix {prefix!r}")
    return prefix + "/"


def part_size_for(size: int, preferred: int) -> int:
    """A part size (whole MiB, at least 5 MiB) that fits size in MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)
    return max(MIN_PART_SIZE, preferred, -(-needed // MiB) * MiB)


_SLOTS: dict[tuple[str, str, str], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def shared_slots(endpoint: str, bucket: str, prefix: str, size: int) -> threading.BoundedSemaphore:
    """One semaphore per repository (endpoint, bucket, prefix) in this process."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault((endpoint, bucket, prefix), threading.BoundedSemaphore(size))


class S3Storage:
    def __init__(self, client, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 storage_class: str | None = None, sse: str | None = None, kms_key_id: str | None = None,
                 max_connections: int = 8, object_lock: ObjectLockSettings | None = None,
                 multipart_threshold: int = 64 * MiB, part_size: int = 16 * MiB):
        self.client = client
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.endpoint = endpoint or "AWS S3"
        self.location = f"s3://{bucket}/{self.prefix}"
        self.object_lock = object_lock
        self.multipart_threshold = max(multipart_threshold, MIN_PART_SIZE)
        self.part_size = part_size
        self._slots = shared_slots(endpoint or "", bucket, self.prefix, max_connections)
        self._write_args: dict[str, str] = {}
        if storage_class:
            self._write_args["StorageClass"] = storage_class
        if sse:
            self._write_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self._write_args["SSEKMSKeyId"] = kms_key_id

    # -- requests and their errors ---------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _request(self, action: str, key: str, operation: Callable, *, read_body: bool = False,
                 **params: Any) -> dict:
        """One request under a connection slot, its errors sorted (module docstring)."""
        with self._slots:
            try:
                response = operation(Bucket=self.bucket, **params)
                if read_body:
                    response["Body"] = response["Body"].read()
                return response
            except bx.ClientError as exc:
                raise self._client_error(action, key, exc) from None
            except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
                raise StorageError(
                    f"no usable S3 credentials for {self.location}: {exc}",
                    "set access_key_id and secret_access_key of the repository (as ${env:...} or "
                    "${file:...}), or give boto3's standard chain credentials (AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role)") from None
            except bx.SSLError as exc:
                if "certificate" in str(exc).lower():
                    raise StorageError(f"TLS with {self.endpoint} failed: {exc}",
                                       "check endpoint_url (http or https) and that the endpoint's "
                                       "certificate is trusted (AWS_CA_BUNDLE)") from None
                raise self._transient(action, key, f"TLS error: {exc}") from None
            except (bx.HTTPClientError, bx.ConnectionError, bx.IncompleteReadError, bx.ChecksumError,
                    bx.FlexibleChecksumError, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    ConnectionError, TimeoutError) as exc:
                raise self._transient(action, key, f"{type(exc).__name__}: {exc}") from None

    def _where(self, key: str) -> str:
        return f"{self.location}{key}" if key else self.location

    def _transient(self, action: str, key: str, what: str) -> TransientError:
        return TransientError(f"cannot {action} {self._where(key)} at {self.endpoint}: {what}",
                              "the endpoint kept failing: check that it is up and reachable (endpoint_url, "
                              "network); running again is safe, nothing half-written is ever listed")

    def _client_error(self, action: str, key: str, exc: bx.ClientError) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        where = self._where(key)
        detail = f" ({message})" if message and message != code else ""
        text = f"cannot {action} {where}: {status} {code}{detail}"
        if status == 412 or code == "PreconditionFailed":
            return AlreadyExists(f"{where} already exists")
        if status == 416 or code == "InvalidRange":
            return _RangeNotSatisfiable(text)
        if status == 429 or status >= 500 or code in TRANSIENT_CODES:
            return self._transient(action, key, f"{status} {code}" + (f" ({message})" if message else ""))
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self.bucket} does not exist at {self.endpoint}",
                                "create the bucket, or fix bucket (and endpoint_url, region) of the repository")
        if code in ("NoSuchKey", "NoSuchVersion") or status == 404:
            return NotFoundError(f"{where} does not exist")
        if code == "InvalidAccessKeyId":
            return StorageError(f"{self.endpoint} does not know the S3 access key id used for {self.location}",
                                "check access_key_id of the repository (or AWS_ACCESS_KEY_ID / the boto3 "
                                "credential chain)")
        if code == "SignatureDoesNotMatch":
            return StorageError(f"the S3 secret access key does not match the access key id ({self.location})",
                                "check secret_access_key of the repository (or AWS_SECRET_ACCESS_KEY)")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException") \
                or status == 301:
            return StorageError(f"bucket {self.bucket} is in another region than the one drorch used ({text})",
                                "set region of the repository to the bucket's region")
        if code == "InvalidRequest" and "objectlock" in message.replace(" ", "").lower():
            return StorageError(f"bucket {self.bucket} does not have Object Lock enabled ({text})",
                                "create the bucket with Object Lock enabled (--object-lock-enabled-for-bucket), "
                                "or remove object_lock from the repository")
        if code.startswith("KMS") or "kms" in message.lower():
            return StorageError(text, "check kms_key_id of the repository and that these credentials may "
                                      "use that key (kms:GenerateDataKey, kms:Decrypt)")
        if code == "InvalidStorageClass":
            return StorageError(text, "check storage_class of the repository")
        if status == 403 or code in ("AccessDenied", "AllAccessDisabled"):
            return StorageError(f"access denied: cannot {action} {where}" + (f" ({message})" if message else ""),
                                f"grant these credentials {PERMISSIONS} on bucket {self.bucket}")
        return StorageError(text, "check the repository settings (bucket, prefix, region, endpoint_url)")

    # -- the interface ------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True) -> None:
        """sync is ignored: a completed PUT is durable."""
        name = self._name(key)
        args = self._args_for_write(key)
        if len(data) > self.multipart_threshold:
            self._put_multipart(key, name, data, args, if_absent)
            return
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        self._request("write", key, self.client.put_object, Key=name, Body=data, **args, **condition)

    def _args_for_write(self, key: str) -> dict:
        lock = self.object_lock
        if lock is None or key.startswith(lock.exempt_prefixes):
            return self._write_args
        until = datetime.now(timezone.utc) + lock.period
        return {**self._write_args, "ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": until}

    def _put_multipart(self, key: str, name: str, data: bytes, args: dict, if_absent: bool) -> None:
        part_size = part_size_for(len(data), self.part_size)
        upload = self._request("start an upload of", key, self.client.create_multipart_upload, Key=name, **args)
        upload_id = upload["UploadId"]
        try:
            view = memoryview(data)
            parts = []
            for number, start in enumerate(range(0, len(data), part_size), start=1):
                response = self._request("write", key, self.client.upload_part, Key=name, UploadId=upload_id,
                                         PartNumber=number, Body=bytes(view[start:start + part_size]))
                part = {"PartNumber": number, "ETag": response["ETag"]}
                part.update({f: response[f] for f in CHECKSUM_FIELDS if response.get(f)})
                parts.append(part)
            condition = {"IfNoneMatch": "*"} if if_absent else {}
            self._request("write", key, self.client.complete_multipart_upload, Key=name, UploadId=upload_id,
                          MultipartUpload={"Parts": parts}, **condition)
        except BaseException:
            self._abort_upload(key, name, upload_id)
            raise

    def _abort_upload(self, key: str, name: str, upload_id: str) -> None:
        try:
            self._request("abort the upload of", key, self.client.abort_multipart_upload,
                          Key=name, UploadId=upload_id)
        except StorageError as exc:
            log.warning("could not abort the multipart upload of %s (%s); expire removes it later",
                        self._where(key), exc)

    def sync(self) -> None:
        """Nothing to do: every put was durable when it returned."""

    def get(self, key: str) -> bytes:
        return self._request("read", key, self.client.get_object, read_body=True, Key=self._name(key))["Body"]

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        name = self._name(key)
        if length <= 0:
            if self.stat(key) is None:
                raise NotFoundError(f"{self._where(key)} does not exist")
            return b""
        try:
            response = self._request("read", key, self.client.get_object, read_body=True, Key=name,
                                     Range=f"bytes={offset}-{offset + length - 1}")
        except _RangeNotSatisfiable:
            return b""  # the object exists; the range starts at or past its end
        if not response.get("ContentRange"):  # an endpoint that ignored the range sent it all
            return response["Body"][offset:offset + length]
        return response["Body"]

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            response = self._request("stat", key, self.client.head_object, Key=self._name(key))
        except NotFoundError:
            return None
        return ObjectInfo(key, response["ContentLength"], response["LastModified"].timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        params = {"Prefix": self.prefix + prefix}
        while True:
            page = self._request("list", prefix, self.client.list_objects_v2, **params)
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if key and not key.endswith("/"):  # "folder" markers of web consoles are no objects
                    yield ObjectInfo(key, obj["Size"], obj["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        name = self._name(key)
        if self.object_lock is None:
            try:
                self._request("delete", key, self.client.delete_object, Key=name)
            except NotFoundError:
                pass
            return
        versions = self._versions(key, name)
        until = self._retained_until(key, name, [v for v, marker in versions if not marker])
        if until is not None:
            raise self._locked(key, until)
        for version_id, _ in versions:
            try:
                self._request("delete", key, self.client.delete_object, Key=name, VersionId=version_id)
            except NotFoundError:
                pass
            except StorageError as exc:
                if "access denied" in exc.message:  # retained after all (clock skew, a bucket default)
                    raise self._locked(key, None) from None
                raise

    def is_empty(self) -> bool:
        page = self._request("list", "", self.client.list_objects_v2, Prefix=self.prefix, MaxKeys=2)
        return not any(obj["Key"] != self.prefix for obj in page.get("Contents", []))

    # -- Object Lock and leftovers --------------------------------------------------------

    def locked_until(self, key: str) -> datetime | None:
        """When the last retained version of key may be deleted (LEGAL_HOLD for a
        legal hold); None when nothing holds it (or Object Lock is not in use)."""
        if self.object_lock is None:
            return None
        name = self._name(key)
        return self._retained_until(key, name, [v for v, marker in self._versions(key, name) if not marker])

    def _versions(self, key: str, name: str) -> list[tuple[str, bool]]:
        """(version id, is a delete marker) of every version of exactly this key."""
        found, params = [], {"Prefix": name}
        while True:
            page = self._request("list versions of", key, self.client.list_object_versions, **params)
            found += [(v["VersionId"], False) for v in page.get("Versions", []) if v["Key"] == name]
            found += [(m["VersionId"], True) for m in page.get("DeleteMarkers", []) if m["Key"] == name]
            if not page.get("IsTruncated"):
                return found
            params.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])

    def _retained_until(self, key: str, name: str, version_ids: list[str]) -> datetime | None:
        # head_object, not get_object_retention: it reports retention and legal hold in one request.
        now, latest = datetime.now(timezone.utc), None
        for version_id in version_ids:
            try:
                head = self._request("stat", key, self.client.head_object, Key=name, VersionId=version_id)
            except NotFoundError:
                continue
            if head.get("ObjectLockLegalHoldStatus") == "ON":
                return LEGAL_HOLD
            until = head.get("ObjectLockRetainUntilDate")
            if until is not None and until > now and (latest is None or until > latest):
                latest = until
        return latest

    def _locked(self, key: str, until: datetime | None) -> ObjectLocked:
        if until is None or until == LEGAL_HOLD:
            why = "is under a legal hold" if until == LEGAL_HOLD else "is retained by Object Lock"
            return ObjectLocked(key, until, f"{self._where(key)} {why}: it cannot be deleted",
                                "lift the legal hold (or wait for the retention to end) to delete it")
        return ObjectLocked(key, until, f"{self._where(key)} is locked (Object Lock) until "
                            f"{until.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
                            "it can be deleted after that time; nothing (not even drorch) can before")

    def cleanup_interrupted(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Abort multipart uploads under the prefix started before older_than ago
        (a crashed writer's; a running one's are younger).  Returns how many."""
        cutoff = datetime.now(timezone.utc) - older_than
        params, aborted = {"Prefix": self.prefix}, 0
        while True:
            page = self._request("list uploads under", "", self.client.list_multipart_uploads, **params)
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    key = upload["Key"][len(self.prefix):]
                    self._abort_upload(key, upload["Key"], upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            params.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])
