"""The nightly backup when S3 or SSH fail under it: a transient failure is retried and the run
still stores exactly one complete backup; a failure that outlasts the retries fails the run with
a message naming S3. Either way no partial object and no multipart upload is left behind.

Task retries wait `ETCDGUARD_RETRY_DELAYS` (0.5, 1, 2 s in tests, see tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from etcdguard_sim import layout
from etcdguard_sim.faults import services as faults
from etcdguard_sim.seed import profiles
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, profile
from flows.backup import etcd_backup
from tasks import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

_MiB = 1024 * 1024
_BUCKETS = (profiles.SNAPSHOT_BUCKET, profiles.STATIC_BUCKET)


@dataclasses.dataclass(frozen=True)
class _Store:
    """What the catalogue and the buckets hold at one moment."""

    backups: frozenset[str]  # backup ids
    incomplete: frozenset[str]
    objects: frozenset[str]  # bucket/key in both buckets
    uploads: tuple[str, ...]  # unfinished multipart uploads in both buckets


def _store_state(profile_dir: Path) -> _Store:
    settings = profile.load_profile("demo", directory=profile_dir).storage
    with ObjectStore(settings) as store:
        return _Store(
            backups=frozenset(
                e.manifest.backup_id for e in catalogue.list_backups(store, settings, cluster="demo")
            ),
            incomplete=frozenset(catalogue.incomplete(store, settings, cluster="demo")),
            objects=frozenset(f"{b}/{o.key}" for b in _BUCKETS for o in store.list_objects(b, "")),
            uploads=tuple(u for b in _BUCKETS for u in store.list_uploads(b, "")),
        )


def _upload_run_counts(flow_run_id: str | UUID | None) -> dict[str, int]:
    """How many times each upload task run of the flow run ran (1: no retry), by file kind.
    A run's kind is the bucket its log lines name (Prefect ships logs in batches: wait)."""
    assert flow_run_id is not None
    run_id = UUID(str(flow_run_id))
    kinds = {
        f"s3://{profiles.SNAPSHOT_BUCKET}/": "snapshot",
        f"s3://{profiles.STATIC_BUCKET}/": "static_resources",
    }
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        uploads = {r.id: r.run_count for r in runs if r.task_key.startswith("upload")}
        deadline = time.monotonic() + 30
        while True:
            counts: dict[str, int] = {}
            for log in client.read_logs(
                LogFilter(task_run_id=LogFilterTaskRunId(any_=list(uploads))), limit=200
            ):
                for marker, kind in kinds.items():
                    if log.task_run_id in uploads and marker in log.message:
                        counts[kind] = uploads[log.task_run_id]
            if len(counts) == len(uploads) == 2 or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


def _latest_backup_run() -> FlowRun:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["etcd-backup"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    return runs[0]


def _assert_one_new_complete_backup(before: _Store, after: _Store, backup_id: str | None) -> None:
    assert after.backups - before.backups == {backup_id}
    assert after.incomplete == before.incomplete  # no snapshot without a manifest was added
    assert after.uploads == ()
    new = sorted(o.rsplit("/", 1)[1].split("_", 1)[0] for o in after.objects - before.objects)
    assert new == ["manifest.json", "snapshot", "static"]  # the backup's three objects, nothing more


def _no_host_backup_dirs(sim: layout.SimSpec) -> list[Path]:
    return list((sim.state_dir / "hosts").glob("*/home/core/assets/backup/etcdguard-*"))


def test_s3_failing_for_a_while_is_retried_and_one_backup_is_stored(
    sim: layout.SimSpec, profile_dir: Path
) -> None:
    before = _store_state(profile_dir)
    # Each S3 call is tried 4 times by botocore, so 13 failed POSTs (CreateMultipartUpload,
    # CompleteMultipartUpload: 2 per upload task) exhaust at least one call: a task retry.
    faults.s3_fail(sim, count=13, methods=("POST",))
    try:
        outcome = etcd_backup("demo")
    finally:
        faults.s3_clear(sim)

    assert outcome.status == "completed", outcome.message
    after = _store_state(profile_dir)
    _assert_one_new_complete_backup(before, after, outcome.backup_id)
    settings = profile.load_profile("demo", directory=profile_dir).storage
    with ObjectStore(settings) as store:
        entry = catalogue.find_backup(store, settings, cluster="demo", backup_id=outcome.backup_id)
        report = catalogue.verify_backup(store, settings, entry)
    assert report.ok, report.problems
    assert (
        max(_upload_run_counts(entry.manifest.flow_run_id).values()) >= 2
    )  # a task retry, not only botocore's
    assert _no_host_backup_dirs(sim) == []


def test_s3_failing_longer_than_the_retries_fails_the_run_and_leaves_nothing(
    sim: layout.SimSpec, profile_dir: Path
) -> None:
    before = _store_state(profile_dir)
    faults.s3_fail(sim, seconds=600, methods=("PUT",))  # every part upload fails
    started = time.monotonic()
    try:
        with pytest.raises(errors.TransientError, match=r"S3 answered 503 \(SlowDown") as info:
            etcd_backup("demo")
    finally:
        faults.s3_clear(sim)

    assert f"Uploading s3://{profiles.SNAPSHOT_BUCKET}/etcd/demo/4.8.12/" in str(info.value)
    assert "retrying may help" in str(info.value)
    run = _latest_backup_run()
    assert run.state is not None
    assert run.state.is_failed()
    assert _upload_run_counts(run.id) == {"snapshot": 4, "static_resources": 4}  # every retry used
    assert time.monotonic() - started < 240
    after = _store_state(profile_dir)
    assert after.objects == before.objects  # no partial object
    assert after.uploads == ()  # every multipart upload was aborted
    assert after.backups == before.backups
    assert _no_host_backup_dirs(sim) == []


# ---- SSH dropped mid-transfer -----------------------------------------------------------------
def _etcdctl(sim: layout.SimSpec, *args: str, stdin: bytes | None = None) -> str:
    node = sim.masters[0]
    crt, key = sim.etcd_cert(node, "peer")
    env = {
        **os.environ,
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": str(sim.etcd_ca),
        "ETCDCTL_CERT": str(crt),
        "ETCDCTL_KEY": str(key),
        "ETCDCTL_ENDPOINTS": ",".join(sim.etcd_endpoints()),
    }
    proc = subprocess.run(
        ["etcdctl", *args], input=stdin, env=env, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


@pytest.fixture
def big_etcd(sim: layout.SimSpec) -> Iterator[int]:
    """80 MiB of incompressible values under /bench-ssh/, so the snapshot takes a while to
    stream; deleted, compacted and defragmented afterwards. Yields the bytes added."""
    value = os.urandom(1280 * 1024)  # etcd refuses requests over 1.5 MiB
    count = 64
    try:
        for i in range(count):
            _etcdctl(sim, "put", f"/bench-ssh/{i:03d}", stdin=value[i:] + value[:i])
        yield count * len(value)
    finally:
        _etcdctl(sim, "del", "--prefix", "/bench-ssh/")
        status = json.loads(_etcdctl(sim, "endpoint", "status", "-w", "json"))
        _etcdctl(sim, "compact", str(max(s["Status"]["header"]["revision"] for s in status)))
        _etcdctl(sim, "defrag", "--command-timeout=60s")


def test_ssh_dropped_mid_transfer_is_retried_and_one_backup_is_stored(
    sim: layout.SimSpec, profile_dir: Path, big_etcd: int
) -> None:
    # One 5 MiB part in flight: with S3 holding it, the reader blocks long before the end of
    # the snapshot, and the SSH stream stays open until the drop.
    path = profile_dir / "demo.yaml"
    data = yaml.safe_load(path.read_text())
    data["storage"].update({"part_size_mib": 5, "parallel_parts": 1})
    path.write_text(yaml.safe_dump(data))
    before = _store_state(profile_dir)
    settings = profile.load_profile("demo", directory=profile_dir).storage
    dropped: list[int] = []
    problems: list[BaseException] = []

    def saboteur() -> None:
        try:
            with ObjectStore(settings) as store:
                deadline = time.monotonic() + 180
                while not store.list_uploads(profiles.SNAPSHOT_BUCKET, "etcd/demo/"):
                    assert time.monotonic() < deadline, "the snapshot upload never started"
                    time.sleep(0.1)
            time.sleep(1.0)  # the stream fills what it may buffer, then waits on S3
            dropped.extend(faults.ssh_drop(sim, node.name) for node in sim.masters)
        except BaseException as exc:
            problems.append(exc)
        finally:
            faults.s3_clear(sim)

    faults.s3_stall(sim, seconds=300, methods=("PUT",))
    thread = threading.Thread(target=saboteur, name="ssh-saboteur")
    thread.start()
    try:
        outcome = etcd_backup("demo")
    finally:
        thread.join(timeout=300)
        faults.s3_clear(sim)

    assert problems == []
    assert sum(dropped) >= 2  # at least the snapshot stream's session (privileged + user sshd)
    assert outcome.status == "completed", outcome.message
    after = _store_state(profile_dir)
    _assert_one_new_complete_backup(before, after, outcome.backup_id)
    with ObjectStore(settings) as store:
        entry = catalogue.find_backup(store, settings, cluster="demo", backup_id=outcome.backup_id)
        report = catalogue.verify_backup(store, settings, entry)
    assert report.ok, report.problems
    assert entry.manifest.snapshot_file.size > big_etcd
    assert _upload_run_counts(entry.manifest.flow_run_id)["snapshot"] == 2  # the interrupted stream, retried
    assert _no_host_backup_dirs(sim) == []
