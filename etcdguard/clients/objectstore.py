"""S3 (or an S3-compatible store), as etcdguard needs it: one small facade over `boto3`.

`upload_parts` streams a multipart upload with several parts in flight and bounded memory. Each
part carries the CRC32 computed here (S3 refuses a part whose bytes do not match it: BadDigest);
the stored object's checksum and size are then checked against the parts sent. Any failure aborts
the upload, so no half-written object or dangling multipart upload is left behind. (CRC32 rather
than Content-MD5 and the ETag: it costs a third of MD5's CPU, and, unlike the ETag, it still
proves the bytes under SSE-KMS.)

Errors: throttling, 5xx, timeouts and refused connections -> `TransientError`; a missing key or
bucket -> `NotFoundError`; anything else S3 refuses -> `PermanentError`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import botocore.exceptions

from etcdguard.clients._aws import Translator, aws_credentials, make_client, read_credentials_file
from etcdguard.core import errors
from etcdguard.core.profile import StorageSettings

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "UploadResult",
    "abort_upload",
    "aws_credentials",
    "delete_versions",
    "list_versions",
    "locked_until",
    "read_credentials_file",
    "stale_uploads",
]

_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
})  # fmt: skip
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "404", "NotFound"})


class UploadResult:
    def __init__(self, *, size: int, etag: str, parts: int) -> None:
        self.size = size
        self.etag = etag
        self.parts = parts


class ObjectInfo:
    def __init__(self, *, key: str, size: int, etag: str, last_modified: datetime | None = None) -> None:
        self.key = key
        self.size = size
        self.etag = etag
        self.last_modified = last_modified


class ObjectStore:
    """Thread-safe: one boto3 client, used from the upload threads."""

    def __init__(self, settings: StorageSettings, *, read_timeout: float = 300) -> None:
        """`read_timeout`: how long one S3 answer may take; CompleteMultipartUpload of a multi-GiB
        object can take minutes."""
        self.settings = settings
        self.endpoint = settings.endpoint_url or f"s3.{settings.region}.amazonaws.com"
        self._s3 = make_client(
            "s3",
            settings,
            field="storage.credentials_file",
            read_timeout=read_timeout,
            max_pool_connections=max(10, settings.parallel_parts * 2),
        )
        self._translate_aws = Translator(
            service="S3",
            endpoint=self.endpoint,
            not_found=_NOT_FOUND,
            transient=_TRANSIENT_CODES,
            not_found_status=True,
        )

    def close(self) -> None:
        self._s3.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """`Translator` for S3, plus: a read whose bytes fail the object's checksum is an
        `IntegrityError` (botocore's FlexibleChecksumError is a BotoCoreError, else transient)."""
        with self._translate_aws(what):
            try:
                yield
            except botocore.exceptions.FlexibleChecksumError as exc:
                raise errors.IntegrityError(
                    f"{what}: the bytes received do not match the checksum S3 keeps for the object "
                    f"({errors.truncate_remote(str(exc), limit=200)}); the object (or the checksum the store "
                    "reports for it) is damaged. Check it with `etcdguard backups verify`."
                ) from exc

    # ---- writes -----------------------------------------------------------------------------
    @staticmethod
    def _extra(kms_key_id: str | None, tags: Mapping[str, str] | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if kms_key_id:
            extra["ServerSideEncryption"] = "aws:kms"
            extra["SSEKMSKeyId"] = kms_key_id
        if tags:
            extra["Tagging"] = urllib.parse.urlencode(dict(tags))
        return extra

    def _check_stored(self, bucket: str, key: str, *, size: int, checksum: str, parts: int) -> None:
        """The object S3 assembled has the size sent and, where S3 reports one, the CRC32 of CRC32s
        of the parts sent (AWS writes it `<base64>-<parts>`); otherwise it is deleted."""
        with self._translate(f"Checking s3://{bucket}/{key}"):
            head = self._s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        stored = head.get("ChecksumCRC32")
        problem = None
        if int(head["ContentLength"]) != size:
            problem = f"S3 stored {head['ContentLength']} bytes but {size} were sent"
        elif stored is not None and str(stored).split("-", 1)[0] != checksum:
            problem = f"S3 reports the checksum {stored} but the {parts} parts sent give {checksum}-{parts}"
        if problem is not None:
            self.delete_keys(bucket, [key])
            raise errors.IntegrityError(
                f"Uploading s3://{bucket}/{key}: {problem}; the stored object does not match what was read "
                "from the host and was deleted."
            )

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """One small object (the manifest); returns its ETag. Content-MD5 makes S3 check the bytes."""
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with self._translate(f"Writing s3://{bucket}/{key}"):
            reply = self._s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentMD5=md5,
                ContentType=content_type,
                **self._extra(kms_key_id, tags),
            )
        return str(reply["ETag"]).strip('"')

    def upload_parts(
        self,
        bucket: str,
        key: str,
        parts: Iterable[bytes],
        *,
        parallel: int,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Multipart upload of `parts` (each but the last >= 5 MiB), `parallel` in flight.

        At most `parallel` parts are buffered besides the one being read, so memory stays near
        `(parallel + 1) x part size`. Any failure aborts the upload and is re-raised translated.
        """
        where = f"Uploading s3://{bucket}/{key}"
        with self._translate(where):
            upload_id = self._s3.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", **self._extra(kms_key_id, tags)
            )["UploadId"]
        slots = threading.BoundedSemaphore(parallel)
        crcs: dict[int, bytes] = {}
        futures: list[Future[dict[str, Any]]] = []
        size = 0

        def send(number: int, body: bytes) -> dict[str, Any]:
            try:
                crc = zlib.crc32(body).to_bytes(4, "big")
                checksum = base64.b64encode(crc).decode()
                with self._translate(f"{where} (part {number})"):
                    reply = self._s3.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=io.BytesIO(body),
                        ChecksumAlgorithm="CRC32",
                        ChecksumCRC32=checksum,
                    )
                stored = reply.get("ChecksumCRC32")
                if stored is not None and stored != checksum:
                    raise errors.IntegrityError(
                        f"{where}: S3 stored part {number} with CRC32 {stored}, but the part sent has {checksum}."
                    )
                crcs[number] = crc
                if progress is not None:
                    progress(len(body))
                return {"PartNumber": number, "ETag": reply["ETag"], "ChecksumCRC32": checksum}
            finally:
                slots.release()

        try:
            with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="s3-part") as pool:
                for number, body in enumerate(parts, start=1):
                    slots.acquire()
                    failed = next((f for f in futures if f.done() and f.exception()), None)
                    if failed is not None:
                        slots.release()
                        failed.result()
                    size += len(body)
                    futures.append(pool.submit(send, number, body))
                    del body
                completed = [f.result() for f in futures]
            with self._translate(f"{where} (completing)"):
                reply = self._s3.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
                )
            etag = str(reply["ETag"]).strip('"')
            composite = base64.b64encode(
                zlib.crc32(b"".join(crcs[n] for n in sorted(crcs))).to_bytes(4, "big")
            )
            self._check_stored(bucket, key, size=size, checksum=composite.decode(), parts=len(completed))
        except BaseException as failure:
            # Abort so no dangling upload is left; an abort that fails must not hide the failure.
            try:
                with self._translate(f"{where} (aborting)"):
                    self._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except errors.EtcdguardError as abort_error:
                failure.add_note(f"Aborting the multipart upload {upload_id} failed too: {abort_error}")
            raise
        return UploadResult(size=size, etag=etag, parts=len(completed))

    def delete_keys(self, bucket: str, keys: Iterable[str]) -> int:
        """Delete `keys` in batches of 1000; returns how many were deleted. Errors name the keys."""
        pending = list(keys)
        deleted = 0
        for start in range(0, len(pending), 1000):
            batch = pending[start : start + 1000]
            with self._translate(f"Deleting {len(batch)} objects in s3://{bucket}"):
                reply = self._s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            failures = reply.get("Errors") or []
            if failures:
                first = failures[0]
                raise errors.TransientError(
                    f"S3 did not delete {len(failures)} of {len(batch)} objects in s3://{bucket}, e.g. "
                    f"{first.get('Key')} ({first.get('Code')}); the next run retries them."
                )
            deleted += len(batch)
        return deleted

    def abort_uploads(self, bucket: str, prefix: str) -> list[str]:
        """Abort every multipart upload under `prefix`; returns their keys."""
        aborted = []
        with self._translate(f"Listing multipart uploads in s3://{bucket}/{prefix}"):
            reply = self._s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        for upload in reply.get("Uploads") or []:
            with self._translate(f"Aborting the upload of s3://{bucket}/{upload['Key']}"):
                self._s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            aborted.append(str(upload["Key"]))
        return aborted

    # ---- reads ------------------------------------------------------------------------------
    def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found = []
        with self._translate(f"Listing s3://{bucket}/{prefix}"):
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    found.append(
                        ObjectInfo(
                            key=item["Key"],
                            size=int(item["Size"]),
                            etag=str(item["ETag"]).strip('"'),
                            last_modified=item.get("LastModified"),
                        )
                    )
        return found

    def list_uploads(self, bucket: str, prefix: str) -> list[str]:
        """Keys with an unfinished multipart upload under `prefix`."""
        with self._translate(f"Listing multipart uploads in s3://{bucket}/{prefix}"):
            reply = self._s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return [str(u["Key"]) for u in reply.get("Uploads") or []]

    def head(self, bucket: str, key: str) -> ObjectInfo:
        with self._translate(f"Reading s3://{bucket}/{key}"):
            reply = self._s3.head_object(Bucket=bucket, Key=key)
        return ObjectInfo(key=key, size=int(reply["ContentLength"]), etag=str(reply["ETag"]).strip('"'))

    def get_bytes(self, bucket: str, key: str) -> bytes:
        with self._translate(f"Reading s3://{bucket}/{key}"):
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def iter_object(self, bucket: str, key: str, *, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        """The object's bytes in chunks (a streaming GET)."""
        with self._translate(f"Reading s3://{bucket}/{key}"):
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def get_tags(self, bucket: str, key: str) -> dict[str, str]:
        with self._translate(f"Reading the tags of s3://{bucket}/{key}"):
            reply = self._s3.get_object_tagging(Bucket=bucket, Key=key)
        return {str(t["Key"]): str(t["Value"]) for t in reply.get("TagSet") or []}

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` if missing (set-up and tests; the backup flow never creates buckets)."""
        with self._translate(f"Creating bucket {bucket}"):
            try:
                self._s3.head_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError:
                region = self.settings.region
                extra = (
                    {}
                    if region == "us-east-1"
                    else {"CreateBucketConfiguration": {"LocationConstraint": region}}
                )
                self._s3.create_bucket(Bucket=bucket, **extra)


# ---- retention: versions, locks, stale uploads (module functions over the same client) -------


def list_versions(store: ObjectStore, bucket: str, prefix: str) -> list[tuple[str, str | None]]:
    """(key, version id) of every version and delete marker under `prefix`; on an unversioned
    bucket, one entry per key with version id None."""
    found: list[tuple[str, str | None]] = []
    with store._translate(f"Listing the versions in s3://{bucket}/{prefix}"):
        for page in store._s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for item in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
                version = item.get("VersionId")
                found.append((str(item["Key"]), None if version in (None, "null") else str(version)))
    return found


def delete_versions(
    store: ObjectStore, bucket: str, items: list[tuple[str, str | None]]
) -> tuple[int, list[tuple[str, str]]]:
    """Delete these versions with DeleteObjects, 1000 per request. Returns (deleted, refused), where
    refused lists (key, S3 error code), e.g. AccessDenied for an Object-Locked version."""
    deleted, refused = 0, []
    for start in range(0, len(items), 1000):
        batch = items[start : start + 1000]
        objects = [{"Key": k, **({"VersionId": v} if v else {})} for k, v in batch]
        with store._translate(f"Deleting {len(batch)} object versions in s3://{bucket}"):
            reply = store._s3.delete_objects(
                Bucket=bucket, Delete={"Objects": objects, "Quiet": True}, BypassGovernanceRetention=False
            )
        failures = reply.get("Errors") or []
        refused += [(str(f.get("Key")), str(f.get("Code"))) for f in failures]
        deleted += len(batch) - len(failures)
    return deleted, refused


def locked_until(store: ObjectStore, bucket: str, key: str) -> datetime | None:
    """The Object Lock retain-until date of the current version, if a retention or legal hold applies."""
    with store._translate(f"Reading s3://{bucket}/{key}"):
        reply = store._s3.head_object(Bucket=bucket, Key=key)
    if reply.get("ObjectLockLegalHoldStatus") == "ON":
        return datetime.max.replace(tzinfo=reply["LastModified"].tzinfo)
    until = reply.get("ObjectLockRetainUntilDate")
    return until if isinstance(until, datetime) else None


def stale_uploads(store: ObjectStore, bucket: str, prefix: str) -> list[tuple[str, str, datetime]]:
    """(key, upload id, initiated) of unfinished multipart uploads under `prefix`."""
    with store._translate(f"Listing multipart uploads in s3://{bucket}/{prefix}"):
        reply = store._s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [(str(u["Key"]), str(u["UploadId"]), u["Initiated"]) for u in reply.get("Uploads") or []]


def abort_upload(store: ObjectStore, bucket: str, key: str, upload_id: str) -> None:
    with store._translate(f"Aborting the upload of s3://{bucket}/{key}"):
        store._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
