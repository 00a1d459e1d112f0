"""Checksums computed while bytes stream past: no second read of a multi-GiB snapshot.

`StreamDigest` is fed the file as it is read from the host, once. It computes the sha256 of the
original bytes, the sha256 of the stored bytes (after optional zstd compression, which it applies),
and checks etcd's sha256 trailer: `etcdctl snapshot save` writes the bolt database followed by the
32-byte sha256 of the database, and `etcdctl snapshot restore` refuses a file whose trailer does
not match (unless told to skip the check). `parts` cuts the stored bytes into multipart-upload
parts of a fixed size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Literal

import zstandard

__all__ = ["TRAILER_SIZE", "StreamDigest", "StreamResult", "parts", "trailer_state"]

TRAILER_SIZE = 32
_PAGE = 512


class StreamResult:
    """What `StreamDigest.finish` found."""

    def __init__(
        self,
        *,
        size_original: int,
        size_stored: int,
        sha256_original: str,
        sha256_stored: str,
        trailer: Literal["present-valid", "absent", "invalid"] | None,
    ) -> None:
        self.size_original = size_original
        self.size_stored = size_stored
        self.sha256_original = sha256_original
        self.sha256_stored = sha256_stored
        self.trailer = trailer


class StreamDigest:
    """Feed original bytes with `update`; get the bytes to store back. Call `finish` once."""

    def __init__(self, *, compress: bool, check_trailer: bool, level: int = 3) -> None:
        # One sha256 pass per byte where the bytes are the same: with the trailer check, the
        # original's digest is the body's digest continued with the tail (`finish`); without
        # compression, the stored bytes are the original bytes.
        self._body = hashlib.sha256()  # everything but the last 32 bytes seen so far
        self._original = None if check_trailer else hashlib.sha256()
        self._stored = hashlib.sha256() if compress else None
        self._tail = b""
        self._size_original = 0
        self._size_stored = 0
        self._check_trailer = check_trailer
        self._compressor = zstandard.ZstdCompressor(level=level).compressobj() if compress else None
        self._done = False
        self.result: StreamResult | None = None
        """Set by `finish`."""

    def update(self, chunk: bytes) -> bytes:
        """Account for `chunk` of the original file; return the bytes to store for it."""
        if self._done:
            raise RuntimeError("StreamDigest.update was called after finish().")
        self._size_original += len(chunk)
        if self._original is not None:
            self._original.update(chunk)
        else:
            self._track_tail(chunk)
        if self._compressor is None:
            self._size_stored += len(chunk)
            return chunk
        out: bytes = self._compressor.compress(chunk)
        if self._stored is not None:
            self._stored.update(out)
        self._size_stored += len(out)
        return out

    def _track_tail(self, chunk: bytes) -> None:
        """Hash all but the last 32 bytes seen so far into `_body` without copying `chunk`."""
        if len(chunk) >= TRAILER_SIZE:
            self._body.update(self._tail)  # the new last 32 bytes are all in `chunk`
            view = memoryview(chunk)
            self._body.update(view[:-TRAILER_SIZE])
            self._tail = bytes(view[-TRAILER_SIZE:])
            return
        window = self._tail + chunk  # at most 63 bytes
        if len(window) > TRAILER_SIZE:
            self._body.update(window[:-TRAILER_SIZE])
            self._tail = window[-TRAILER_SIZE:]
        else:
            self._tail = window

    def finish(self) -> tuple[bytes, StreamResult]:
        """The last bytes to store (the compressor's flush) and the result."""
        if self._done:
            raise RuntimeError("StreamDigest.finish was called twice.")
        self._done = True
        out = self._compressor.flush() if self._compressor is not None else b""
        self._size_stored += len(out)
        trailer = None
        original = self._original
        if original is None:  # checking the trailer: original = body + tail
            trailer = trailer_state(
                body_sha256=self._body.digest(), tail=self._tail, size=self._size_original
            )
            original = self._body.copy()
            original.update(self._tail)
        sha256_original = original.hexdigest()
        sha256_stored = sha256_original
        if self._stored is not None:
            self._stored.update(out)
            sha256_stored = self._stored.hexdigest()
        self.result = StreamResult(
            size_original=self._size_original,
            size_stored=self._size_stored,
            sha256_original=sha256_original,
            sha256_stored=sha256_stored,
            trailer=trailer,
        )
        return out, self.result


def trailer_state(
    *, body_sha256: bytes, tail: bytes, size: int
) -> Literal["present-valid", "absent", "invalid"]:
    """Compare the sha256 of everything before the last 32 bytes with those bytes.

    A bolt database's size is a multiple of its page size (a multiple of 512); etcd's trailer
    adds 32 bytes. So a file of size `k*page` has no trailer ("absent"), one of `k*page + 32`
    must carry a correct one, and any other size is damaged ("invalid").
    """
    if size % _PAGE == 0:
        return "absent"
    if size % _PAGE != TRAILER_SIZE or len(tail) < TRAILER_SIZE:
        return "invalid"
    return "present-valid" if body_sha256 == tail else "invalid"


def parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut `chunks` into pieces of exactly `size` bytes (the last may be shorter, never empty
    unless the whole input is empty, in which case one empty part is yielded).

    Each byte is copied once, into its part: the chunks are held as views until a part is full."""
    if size <= 0:
        raise ValueError(f"part size {size} must be positive.")
    pending: list[memoryview] = []
    held = 0
    produced = False
    for chunk in chunks:
        view = memoryview(chunk)
        while held + len(view) >= size:
            take = size - held
            pending.append(view[:take])
            yield b"".join(pending)
            produced = True
            pending = []
            held = 0
            view = view[take:]
        if len(view):
            pending.append(view)
            held += len(view)
    if pending or not produced:
        yield b"".join(pending)
