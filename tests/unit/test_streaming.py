"""`StreamDigest` against hashlib and zstandard for any chunking, etcd's sha256 trailer on
snapshot-like files, and `parts` re-cutting a stream into multipart-upload parts."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdguard.core import streaming

pytestmark = pytest.mark.unit

PAGE = 4096  # bolt's page size on Linux: snapshot bodies are whole pages


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the (sorted, de-duplicated) offsets `cuts`, keeping empty chunks out."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed(digest: streaming.StreamDigest, chunks: list[bytes]) -> tuple[bytes, streaming.StreamResult]:
    stored = b"".join(digest.update(chunk) for chunk in chunks)
    tail, result = digest.finish()
    return stored + tail, result


def snapshot_like(pages: int, *, seed: int = 7) -> bytes:
    """A file shaped like `etcdctl snapshot save` output: whole pages, then sha256(pages)."""
    body = random.Random(seed).randbytes(pages * PAGE)
    return body + hashlib.sha256(body).digest()


chunkings = st.lists(st.integers(min_value=0, max_value=10**6), max_size=12)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000), cuts=chunkings, empty_chunks=st.integers(0, 3))
def test_uncompressed_digests_equal_hashlib_for_any_chunking(
    data: bytes, cuts: list[int], empty_chunks: int
) -> None:
    chunks = chunked(data, cuts) + [b""] * empty_chunks
    digest = streaming.StreamDigest(compress=False, check_trailer=False)

    stored, result = feed(digest, chunks)

    assert stored == data
    assert result.sha256_original == result.sha256_stored == hashlib.sha256(data).hexdigest()
    assert result.size_original == result.size_stored == len(data)
    assert result.trailer is None
    assert digest.result is result


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=20_000), cuts=chunkings, level=st.sampled_from([1, 3, 9]))
def test_zstd_round_trip_and_stored_digest_is_of_the_compressed_bytes(
    data: bytes, cuts: list[int], level: int
) -> None:
    digest = streaming.StreamDigest(compress=True, check_trailer=False, level=level)

    stored, result = feed(digest, chunked(data, cuts))

    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
    assert result.sha256_original == hashlib.sha256(data).hexdigest()
    assert result.sha256_stored == hashlib.sha256(stored).hexdigest()
    assert result.size_original == len(data)
    assert result.size_stored == len(stored)


def test_compression_shrinks_a_redundant_snapshot() -> None:
    data = (b"/kubernetes.io/configmaps/openshift-etcd/etcd-scripts" * 2000)[: 16 * PAGE]
    stored, result = feed(streaming.StreamDigest(compress=True, check_trailer=True), [data])
    assert result.size_stored == len(stored) < len(data) // 10
    assert zstandard.ZstdDecompressor().decompress(stored, max_output_size=len(data)) == data


@settings(max_examples=30, deadline=None)
@given(pages=st.integers(1, 6), cuts=chunkings, compress=st.booleans())
def test_a_snapshot_with_its_sha256_trailer_is_present_valid(
    pages: int, cuts: list[int], compress: bool
) -> None:
    data = snapshot_like(pages)
    _, result = feed(streaming.StreamDigest(compress=compress, check_trailer=True), chunked(data, cuts))
    assert result.trailer == "present-valid"
    assert result.sha256_original == hashlib.sha256(data).hexdigest()


@settings(max_examples=30, deadline=None)
@given(pages=st.integers(1, 4), position=st.integers(min_value=0), cuts=chunkings)
def test_a_flipped_byte_anywhere_makes_the_trailer_invalid(
    pages: int, position: int, cuts: list[int]
) -> None:
    damaged = bytearray(snapshot_like(pages))
    damaged[position % len(damaged)] ^= 0x40
    data = bytes(damaged)
    _, result = feed(streaming.StreamDigest(compress=False, check_trailer=True), chunked(data, cuts))
    assert result.trailer == "invalid"


@pytest.mark.parametrize("pages", [0, 1, 3])
def test_whole_pages_without_a_trailer_are_absent(pages: int) -> None:
    data = random.Random(pages).randbytes(pages * PAGE)
    _, result = feed(streaming.StreamDigest(compress=False, check_trailer=True), chunked(data, [100, 5000]))
    assert result.trailer == "absent"


@pytest.mark.parametrize(
    "size", [1, 31, 33, PAGE - 1, PAGE + 1, PAGE + 31, PAGE + 33, 2 * PAGE + 64, 3 * PAGE + 4000]
)
def test_other_sizes_are_invalid(size: int) -> None:
    data = random.Random(size).randbytes(size)
    _, result = feed(streaming.StreamDigest(compress=False, check_trailer=True), [data])
    assert result.trailer == "invalid"


def test_a_truncated_snapshot_is_invalid() -> None:
    data = snapshot_like(2)[:-1]
    _, result = feed(streaming.StreamDigest(compress=False, check_trailer=True), [data])
    assert result.trailer == "invalid"


def test_trailer_state_directly() -> None:
    body = b"\x00" * 512
    good = hashlib.sha256(body).digest()
    assert streaming.trailer_state(body_sha256=good, tail=good, size=544) == "present-valid"
    assert streaming.trailer_state(body_sha256=good, tail=good[::-1], size=544) == "invalid"
    assert streaming.trailer_state(body_sha256=good, tail=good, size=1024) == "absent"
    assert streaming.trailer_state(body_sha256=good, tail=good[:10], size=544) == "invalid"


@pytest.mark.parametrize("compress", [False, True])
def test_update_after_finish_raises(compress: bool) -> None:
    digest = streaming.StreamDigest(compress=compress, check_trailer=True)
    digest.update(b"abc")
    digest.finish()
    with pytest.raises(RuntimeError, match=r"update was called after finish\(\)"):
        digest.update(b"more")


# ---- parts ------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000), cuts=chunkings, size=st.integers(1, 700))
def test_parts_are_exact_sizes_and_preserve_the_bytes(data: bytes, cuts: list[int], size: int) -> None:
    out = list(streaming.parts(chunked(data, cuts), size))

    assert b"".join(out) == data
    assert all(len(p) == size for p in out[:-1])
    assert 0 < len(out[-1]) <= size or data == b""
    assert len(out) == max(1, -(-len(data) // size))


@pytest.mark.parametrize("chunks", [[], [b""], [b"", b""]])
def test_empty_input_gives_one_empty_part(chunks: list[bytes]) -> None:
    assert list(streaming.parts(chunks, 5)) == [b""]


def test_parts_of_a_multiple_of_the_size_has_no_empty_tail() -> None:
    assert list(streaming.parts([b"abcd", b"ef"], 3)) == [b"abc", b"def"]
    assert list(streaming.parts([b"abcdefg"], 3)) == [b"abc", b"def", b"g"]


@pytest.mark.parametrize("size", [0, -1])
def test_parts_refuses_a_non_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match=rf"part size {size} must be positive"):
        list(streaming.parts([b"x"], size))


def test_parts_is_lazy() -> None:
    """Parts are yielded as soon as they are full: a multi-GiB stream is never held whole."""
    pulled: list[int] = []

    def source() -> Iterator[bytes]:
        for index in range(10):
            pulled.append(index)
            yield b"x" * 4

    iterator = streaming.parts(source(), 8)
    assert next(iterator) == b"x" * 8
    assert pulled == [0, 1]


def test_finish_twice_raises() -> None:
    digest = streaming.StreamDigest(compress=True, check_trailer=False)
    digest.update(b"abc")
    digest.finish()
    with pytest.raises(RuntimeError, match=r"finish was called twice"):
        digest.finish()
