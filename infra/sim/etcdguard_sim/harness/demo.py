"""`make demo`: the nightly etcd-backup flow, end to end, against the simulated cluster and S3.

1. start the simulated OpenShift 4.8.12 cluster and its S3 (moto) — `etcdguard-sim up`;
2. write the cluster's etcdguard profile and create its two buckets;
3. start a Prefect server (its own PREFECT_HOME under the state dir) and run `etcd-backup`;
4. show where the backup is and its manifest, then prove it: download every file and check its
   sha256 against the manifest, and restore the snapshot with `etcdctl snapshot restore`
   (which checks etcd's own sha256 trailer);
5. stop the Prefect server and the cluster, unless `--keep` (then it says how to open the UI).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from etcdguard_sim import cli
from etcdguard_sim.harness import prefectserver
from etcdguard_sim.runtime import control
from etcdguard_sim.seed import profiles

__all__ = ["main"]


def _prove(cluster: str) -> int:
    from etcdguard.clients.objectstore import ObjectStore
    from etcdguard.core import profile
    from tasks import catalogue

    cluster_profile = profile.load_profile(cluster)
    with ObjectStore(cluster_profile.storage) as store:
        entry = catalogue.find_backup(store, cluster_profile.storage, cluster=cluster)
        print(f"\n== manifest s3://{cluster_profile.storage.snapshots.bucket}/{entry.manifest_key}")
        print(json.dumps(json.loads(entry.manifest.to_json_bytes()), indent=2))
        print("\n== verifying: download every file and compare with the manifest")
        report = catalogue.verify_backup(store, cluster_profile.storage, entry)
        for line in report.checked:
            print(f"  ok  {line}")
        for line in report.problems:
            print(f"  BAD {line}")
        snapshot = entry.manifest.snapshot_file
        data = store.get_bytes(cluster_profile.storage.snapshots.bucket, snapshot.key)
    with tempfile.TemporaryDirectory(prefix="etcdguard-demo-") as scratch:
        db = Path(scratch) / "snapshot.db"
        db.write_bytes(data)
        restore = subprocess.run(
            ["etcdctl", "snapshot", "restore", str(db), "--data-dir", f"{scratch}/restored"],
            capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, check=False,
        )  # fmt: skip
    if restore.returncode == 0:
        print("  ok  etcdctl snapshot restore: the snapshot restores (its sha256 trailer checked by etcd)")
    else:
        print(f"  BAD etcdctl snapshot restore failed: {restore.stderr.strip()[-300:]}")
    return 0 if report.ok and restore.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.harness.demo")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--keep", action="store_true", help="leave the cluster and the Prefect server running"
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    try:
        spec = control.up(state_dir)
    except control.SimError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    cli._print_up(spec)
    profile_dir = state_dir / "profiles"
    path = profiles.write_profile(spec, profile_dir)
    print(f"\netcdguard profile: {path}")
    os.environ.update(
        ETCDGUARD_PROFILES=str(profile_dir),
        PREFECT_HOME=str(state_dir / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    server, url = prefectserver.start(state_dir)
    os.environ["PREFECT_API_URL"] = url
    code = 1
    try:
        from flows.backup import etcd_backup

        print(
            f"Prefect server: {url.removesuffix('/api')}\n\n== running flow etcd-backup(cluster={spec.cluster_name!r})"
        )
        outcome = etcd_backup(spec.cluster_name)
        print(f"\n== {outcome.status}: {outcome.message}")
        print(f"  snapshot:          {outcome.snapshot_uri}")
        print(f"  static resources:  {outcome.static_resources_uri}")
        print(f"  manifest:          {outcome.manifest_uri}")
        print(f"  taken on:          {outcome.source_node} ({outcome.ocp_version})")
        code = _prove(spec.cluster_name)
    finally:
        if args.keep:
            print(
                f"\nKept running. Prefect UI: {url.removesuffix('/api')} (server pid {server.pid}); "
                f"cluster: KUBECONFIG={spec.kubeconfig} kubectl get nodes.\n"
                f"Stop with: kill {server.pid}; make sim-down"
            )
        else:
            # Send the logs and events still queued while the server is there to take them.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
            prefectserver.stop(server)
            control.down(state_dir)
            print("\nStopped the Prefect server and the simulated cluster (run with KEEP=1 to keep them).")
    return code


if __name__ == "__main__":
    sys.exit(main())
