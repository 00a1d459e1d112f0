"""`etcdguard backups list|show|verify` as an admin runs it: a real backup taken by the flow
(through Prefect, against the simulated cluster and S3), then the installed console script run
as a subprocess. The test also plays an attacker on S3, overwriting the stored snapshot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from etcdguard_sim import layout
from etcdguard_sim.runtime import cloud
from etcdguard_sim.seed import profiles

from flows.backup import BackupOutcome, etcd_backup

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

ETCDGUARD = Path(sys.executable).parent / "etcdguard"


def _s3(sim: layout.SimSpec) -> Any:
    return boto3.client(
        "s3", endpoint_url=sim.moto_endpoint, region_name=cloud.REGION, **cloud.DUMMY_CREDENTIALS
    )


@pytest.fixture(scope="module")
def backup(
    sim: layout.SimSpec, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, BackupOutcome]:
    """One real backup of `demo`, and the profiles directory that describes its S3."""
    directory = tmp_path_factory.mktemp("cli") / "profiles"
    profiles.write_profile(sim, directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ETCDGUARD_PROFILES", str(directory))
        outcome = etcd_backup("demo")
    assert outcome.status == "completed", outcome.message
    assert outcome.backup_id is not None
    return directory, outcome


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script, with ETCDGUARD_PROFILES unset unless `env` sets it."""
    base = {k: v for k, v in os.environ.items() if k not in {"ETCDGUARD_PROFILES", "COLUMNS"}}
    return subprocess.run(
        [str(ETCDGUARD), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def test_list_shows_the_backup(sim: layout.SimSpec, backup: tuple[Path, BackupOutcome]) -> None:
    directory, outcome = backup
    assert outcome.backup_id is not None
    s3 = _s3(sim)
    # An upload that never got its manifest: counted below the table, not listed.
    orphan = "etcd/demo/4.8.12/2001-01-01T000000Z/snapshot_2001-01-01_000000.db"
    s3.put_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=orphan, Body=b"partial")
    try:
        result = run("backups", "list", "--cluster", "demo", "--profiles", str(directory))
        scoped = run(
            "backups", "list", "--cluster", "demo", "--version", "4.9.0", "--profiles", str(directory)
        )
    finally:
        s3.delete_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=orphan)
        s3.close()

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    print(result.stdout)  # shown with -rP: what an admin sees
    row = next((line for line in lines if outcome.backup_id in line), None)
    assert row is not None, result.stdout
    assert outcome.source_node is not None
    assert outcome.source_node in row
    assert "4.8.12" in row
    assert "present-valid" in row
    assert "0/0" in row
    assert "MiB" in row or "KiB" in row
    stamp = outcome.backup_id.rsplit("/", 1)[1]  # 2025-11-26T013512Z
    assert f"{stamp[:10]} {stamp[11:13]}:{stamp[13:15]}:{stamp[15:17]}" in row
    assert "orphan" not in result.stdout
    assert "2001-01-01" not in result.stdout
    assert "1 object(s) of incomplete uploads" in lines[-1]
    assert scoped.returncode == 0, scoped.stderr
    assert "has no complete backup (4.9.0)" in scoped.stdout
    assert "0 complete backup(s); 0 object(s) of incomplete uploads." in scoped.stdout


def test_show_prints_the_manifest(backup: tuple[Path, BackupOutcome]) -> None:
    directory, outcome = backup
    assert outcome.backup_id is not None

    by_id = run("backups", "show", "--cluster", "demo", outcome.backup_id, "--profiles", str(directory))
    newest = run("backups", "show", "--cluster", "demo", env={"ETCDGUARD_PROFILES": str(directory)})

    assert by_id.returncode == 0, by_id.stderr
    manifest = json.loads(by_id.stdout)
    assert manifest["cluster"] == "demo"
    assert manifest["ocp_version"] == "4.8.12"
    assert manifest["source_node"] == outcome.source_node
    assert outcome.snapshot_uri is not None
    assert any(outcome.snapshot_uri.endswith(f["key"]) for f in manifest["files"])
    assert outcome.backup_id.rsplit("/", 1)[1] in by_id.stdout
    assert newest.returncode == 0, newest.stderr
    assert json.loads(newest.stdout)["created_at"] >= manifest["created_at"]


def test_verify_passes_then_catches_a_replaced_snapshot(
    sim: layout.SimSpec, backup: tuple[Path, BackupOutcome]
) -> None:
    directory, outcome = backup
    assert outcome.backup_id is not None
    assert outcome.snapshot_uri is not None
    good = run("backups", "verify", "--cluster", "demo", outcome.backup_id, "--profiles", str(directory))

    assert good.returncode == 0, good.stdout + good.stderr
    assert f"Backup {outcome.backup_id}: OK, 2 file(s) checked." in good.stdout
    assert good.stdout.count("matches") == 2
    assert "snapshot:" in good.stdout
    assert "static_resources:" in good.stdout

    key = outcome.snapshot_uri.removeprefix(f"s3://{profiles.SNAPSHOT_BUCKET}/")
    s3 = _s3(sim)
    original = s3.get_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=key)["Body"].read()
    forged = bytearray(original)
    forged[len(forged) // 2] ^= 0xFF  # same size: only the checksum can tell
    s3.put_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=key, Body=bytes(forged))
    try:
        bad = run("backups", "verify", "--cluster", "demo", outcome.backup_id, "--profiles", str(directory))
        everything = run("backups", "verify", "--cluster", "demo", "--all", "--profiles", str(directory))
    finally:
        s3.put_object(Bucket=profiles.SNAPSHOT_BUCKET, Key=key, Body=original)
        s3.close()

    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"Backup {outcome.backup_id}: 1 PROBLEM(S)." in bad.stdout
    problem = next(line for line in bad.stdout.splitlines() if "PROBLEM " in line)
    assert f"snapshot s3://{profiles.SNAPSHOT_BUCKET}/{key} has sha256" in problem
    assert "the manifest says" in problem
    assert "static_resources:" in bad.stdout  # the intact file is still reported as checked
    assert "Traceback" not in bad.stderr
    assert everything.returncode == 1, everything.stdout + everything.stderr
    assert f"Backup {outcome.backup_id}: 1 PROBLEM(S)." in everything.stdout
    summary = re.search(r"^(\d+) of (\d+) backup\(s\) intact\.$", everything.stdout, re.MULTILINE)
    assert summary is not None, everything.stdout
    assert int(summary.group(1)) == int(summary.group(2)) - 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backups", "list", "--cluster", "prod"], "No profile for cluster 'prod'"),
        (
            ["backups", "show", "--cluster", "demo", "demo/4.8.12/2001-01-01T000000Z"],
            "Backup 'demo/4.8.12/2001-01-01T000000Z' is not in the catalogue of cluster 'demo'",
        ),
        (
            ["backups", "verify", "--cluster", "demo", "--version", "4.8"],
            "--version: '4.8' is not an OpenShift",
        ),
        (
            ["backups", "show", "--cluster", "demo", "--version", "4.9.0"],
            "has no complete backup for z-stream 4.9.0",
        ),
    ],
)
def test_expected_errors_exit_2_without_a_traceback(
    backup: tuple[Path, BackupOutcome], args: list[str], message: str
) -> None:
    directory, _ = backup
    result = run(*args, "--profiles", str(directory))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("etcdguard: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
