"""Retention at scale (issue 5): the planner over 1,000,000 catalogue entries and the apply step
over 20,000 real objects in an S3 server, each against the naive way, in one run.

    .venv/bin/python -m bench.retention_scale [--entries 1000000] [--objects 20000]

Planner: etcdguard's `plan_retention` (one sort, one walk per rule) per cluster, against a naive
planner that re-sorts the candidates for every rule. Apply: etcdguard's `apply_plan` (one version
listing per backup directory, DeleteObjects with 1000 keys per request) against one
DeleteObject per key, on the same number of objects in moto's S3 server over HTTP.
Prints times, request counts and ratios. A benchmark, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import retention
from etcdguard.core.profile import BucketLocation, StorageSettings
from tasks import retention_apply

UTC = dt.UTC


def _catalogue(
    entries: int, *, clusters: int, now: dt.datetime
) -> dict[str, list[retention.BackupCandidate]]:
    rng = random.Random(7)
    per = entries // clusters
    out: dict[str, list[retention.BackupCandidate]] = {}
    for c in range(clusters):
        name = f"cluster-{c:03d}"
        items = []
        for i in range(per):
            created = now - dt.timedelta(hours=i * 2, minutes=rng.randrange(60))
            version = "4.8.12" if i < per // 3 else ("4.8.11" if i < 2 * per // 3 else "4.8.10")
            items.append(
                retention.BackupCandidate(
                    backup_id=f"{name}/{version}/{created:%Y-%m-%dT%H%M%SZ}-{i}",
                    cluster=name, ocp_version=version, created_at=created, size_bytes=100_000_000,
                    verified=True, drill="passed" if i % 7 == 0 else None, pinned=i % 5000 == 0,
                    locked=False, complete=i % 997 != 0,
                )
            )  # fmt: skip
        rng.shuffle(items)
        out[name] = items
    return out


def _naive_plan(
    items: list[retention.BackupCandidate], policy: retention.RetentionPolicy, now: dt.datetime
) -> tuple[
    list[tuple[retention.BackupCandidate, list[str]]], list[tuple[retention.BackupCandidate, list[str]]]
]:
    """The same keep-rules and floor as etcdguard's planner (bar the z-stream window and the caps),
    each computed on a fresh sort of the whole list (what etcdguard avoids); keep and delete lists
    with reasons, newest first."""
    zone = zoneinfo.ZoneInfo(policy.timezone)
    reasons: dict[str, list[str]] = defaultdict(list)

    def newest_first(pred: Callable[[retention.BackupCandidate], bool]) -> list[retention.BackupCandidate]:
        return sorted((b for b in items if b.complete and pred(b)), key=lambda b: b.created_at, reverse=True)

    for b in newest_first(lambda b: b.pinned):
        reasons[b.backup_id].append("pinned")
    for b in newest_first(lambda b: b.verified)[:1]:
        reasons[b.backup_id].append("newest verified")
    for i, b in enumerate(newest_first(lambda b: True)[: policy.keep_last]):
        reasons[b.backup_id].append(f"keep_last {i + 1}/{policy.keep_last}")
    if policy.keep_younger_than is not None:
        for b in newest_first(lambda b: now - b.created_at <= policy.keep_younger_than):  # type: ignore[operator]
            reasons[b.backup_id].append("younger than keep_younger_than")
    rules: tuple[tuple[str, int, Callable[[retention.BackupCandidate], object]], ...] = (
        ("hourly", policy.keep_hourly, lambda b: b.created_at.astimezone(zone).strftime("%Y-%m-%d %H%z")),
        ("daily", policy.keep_daily, lambda b: b.created_at.astimezone(zone).date()),
        ("weekly", policy.keep_weekly, lambda b: b.created_at.astimezone(zone).isocalendar()[:2]),
        ("monthly", policy.keep_monthly, lambda b: b.created_at.astimezone(zone).strftime("%Y-%m")),
    )
    for name, count, bucket_of in rules:
        seen: list[object] = []
        for b in newest_first(lambda b: True):
            bucket = bucket_of(b)
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(bucket)
            reasons[b.backup_id].append(f"{name} {bucket}")
    for version in {b.ocp_version for b in items}:
        for b in newest_first(lambda b, v=version: b.ocp_version == v)[:1]:  # type: ignore[misc]
            reasons[b.backup_id].append(f"newest of {version}")
    for b in newest_first(lambda b: b.verified)[: policy.min_verified]:
        reasons[b.backup_id].append("floor")
    keep, delete = [], []
    for b in sorted(items, key=lambda b: b.created_at, reverse=True):
        if reasons.get(b.backup_id):
            keep.append((b, reasons[b.backup_id]))
        else:
            delete.append((b, ["no rule keeps it"]))
    return keep, delete


def bench_planner(entries: int) -> None:
    now = dt.datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    policy = retention.RetentionPolicy(keep_last=5, keep_daily=14, keep_weekly=8, keep_monthly=24)
    catalogue = _catalogue(entries, clusters=50, now=now)
    started = time.perf_counter()
    deletes = 0
    for items in catalogue.values():
        plan = retention.plan_retention(
            items, policy, context=retention.ClusterContext(current_version="4.8.12"), now=now
        )
        deletes += len(plan.delete)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    naive_deletes = 0
    for items in catalogue.values():
        naive_deletes += len(_naive_plan(items, policy, now)[1])
    naive = time.perf_counter() - started
    print(f"planner: {entries:,} entries in 50 clusters; etcdguard {ours:.2f} s ({deletes:,} to delete), "
          f"naive re-sort per rule {naive:.2f} s ({naive_deletes:,} to delete); "
          f"ratio etcdguard/naive = {ours / naive:.2f}")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _moto() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


class _Counter:
    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, **_: object) -> None:
        self.requests += 1


def _fill(s3: object, bucket: str, backups: int) -> list[str]:
    """`backups` backups of 2 objects each (snapshot + manifest) under etcd/bench/4.8.12/<ts>/."""
    from concurrent.futures import ThreadPoolExecutor

    now = dt.datetime(2026, 11, 26, tzinfo=UTC)
    keys = []
    for i in range(backups):
        stamp = (now - dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H%M%SZ")
        date = (now - dt.timedelta(hours=i)).strftime("%Y-%m-%d_%H%M%S")
        keys += [f"etcd/bench/4.8.12/{stamp}/snapshot_{date}.db", f"etcd/bench/4.8.12/{stamp}/manifest.json"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))  # type: ignore[attr-defined]
    return keys


def bench_apply(objects: int) -> None:
    creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    with _moto() as url:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **creds)
        s3.create_bucket(Bucket="ours")
        s3.create_bucket(Bucket="naive")
        started = time.perf_counter()
        ours_keys = _fill(s3, "ours", objects // 2)
        naive_keys = _fill(s3, "naive", objects // 2)
        assert len(ours_keys) == len(naive_keys) == objects
        fill = time.perf_counter() - started
        settings = StorageSettings(
            endpoint_url=url,
            snapshots=BucketLocation(bucket="ours", prefix="etcd"),
            static_resources=BucketLocation(bucket="ours-static", prefix="static"),
        )
        cred_file = Path(tempfile.mkdtemp(prefix="etcdguard-bench-")) / "s3.env"
        cred_file.write_text("AWS_ACCESS_KEY_ID=bench\nAWS_SECRET_ACCESS_KEY=bench\n")
        settings = settings.model_copy(update={"credentials_file": cred_file})
        by_backup: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for key in ours_keys:
            by_backup[key.rsplit("/", 1)[0]].append(("ours", key))
        doomed = [
            retention.Decision(
                retention.BackupCandidate(
                    backup_id=bid, cluster="bench", ocp_version="4.8.12", created_at=dt.datetime.now(UTC),
                    size_bytes=1, verified=True, drill=None, pinned=False, locked=False, complete=True,
                ),
                ("bench",),
            )
            for bid in by_backup
        ]  # fmt: skip
        plan = retention.RetentionPlan(
            keep=(), delete=tuple(doomed), skipped_locked=(), floor_violations=(), bytes_freed=0
        )
        view = retention_apply.CatalogueView(candidates=[], objects=dict(by_backup), stale_uploads=[])
        with ObjectStore(settings) as store:
            started = time.perf_counter()
            report = retention_apply.apply_plan(store, view, plan, uploads_to_abort=[])
            ours = time.perf_counter() - started
        cred_file.unlink()
        counter = _Counter()
        s3.meta.events.register("before-send.s3.*", counter)
        started = time.perf_counter()
        for key in naive_keys:
            s3.delete_object(Bucket="naive", Key=key)
        naive = time.perf_counter() - started
        left = (
            s3.list_objects_v2(Bucket="ours").get("KeyCount", 0),
            s3.list_objects_v2(Bucket="naive").get("KeyCount", 0),
        )
    print(
        f"apply: {objects:,} objects per strategy ({objects // 2:,} backups of 2 objects; filled in {fill:.1f} s)"
    )
    print(f"  etcdguard: {report.deleted_versions:,} versions deleted in {ours:.2f} s with {report.requests:,} requests "
          f"(paginated version listing + DeleteObjects of 1000)")  # fmt: skip
    print(
        f"  naive:     {len(naive_keys):,} DeleteObject calls in {naive:.2f} s ({counter.requests:,} requests)"
    )
    print(f"  ratio etcdguard/naive time = {ours / naive:.2f}; left over: {left}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention_scale")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=20_000)
    args = parser.parse_args(argv)
    bench_planner(args.entries)
    bench_apply(args.objects)
    return 0


if __name__ == "__main__":
    sys.exit(main())
