"""Host file -> S3 object, streamed: the product's one copy loop (no Prefect here).

`stream_to_store` reads a file from a host over SSH (`sudo cat`), runs it through
`streaming.StreamDigest` (sha256 of what is read and of what is stored, optional zstd, the
snapshot's sha256 trailer) and `streaming.parts`, and hands the parts to
`ObjectStore.upload_parts`. The `upload` task and bench/backup_throughput both call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from etcdguard.clients.hosts import HostSession
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, streaming
from etcdguard.core.profile import StorageSettings

__all__ = ["Transferred", "stream_to_store"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Transferred:
    bucket: str
    key: str
    result: streaming.StreamResult
    """What the digest saw: sizes and sha256 of the bytes read and stored, the trailer."""
    parts: int


def stream_to_store(
    host: HostSession,
    store: ObjectStore,
    *,
    path: str,
    bucket: str,
    key: str,
    storage: StorageSettings,
    compress: bool,
    check_trailer: bool,
    kms_key_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Transferred:
    """Stream `path` on `host` to s3://`bucket`/`key` in parts of `storage.part_size`,
    `storage.parallel_parts` in flight. `progress(nbytes)` is called for each chunk read from the
    host, on the calling thread. `IntegrityError` when the stream ends early or S3 holds another
    size than was stored; the trailer's verdict is left to the caller (`result.trailer`)."""
    digest = streaming.StreamDigest(compress=compress, check_trailer=check_trailer)

    def stored_chunks() -> Iterator[bytes]:
        for chunk in host.stream(path, sudo=True):
            if progress is not None:
                progress(len(chunk))
            out = digest.update(chunk)
            if out:
                yield out
        tail, _ = digest.finish()
        if tail:
            yield tail

    upload = store.upload_parts(
        bucket,
        key,
        streaming.parts(stored_chunks(), storage.part_size),
        parallel=storage.parallel_parts,
        kms_key_id=kms_key_id,
        tags=tags,
    )
    result = digest.result
    if result is None:
        raise errors.IntegrityError("The stream ended before the whole file was read.")
    if result.size_stored != upload.size:
        raise errors.IntegrityError(
            f"{upload.size} bytes reached s3://{bucket}/{key} but {result.size_stored} were read."
        )
    return Transferred(bucket=bucket, key=key, result=result, parts=upload.parts)
