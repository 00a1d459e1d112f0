"""Throughput of etcdguard's host-to-S3 backup stage against the naive copy-then-upload, in one run.

    .venv/bin/python -m bench.backup_throughput [--size-mib 1024] [--state-dir DIR] [--repeat N]

1. starts a simulated cluster (`etcdguard_sim.runtime.control.up`, always stopped at the end) and writes
   its etcdguard profile (buckets in the simulator's moto S3);
2. fills its etcd to about --size-mib with incompressible 1000 KiB values under /bench/, then takes
   a real snapshot with `sudo cluster-backup.sh` on a control-plane host (a root-owned file);
3. measures, each stage in a fresh child process (wall clock, peak RSS of that process):
   (a) etcdguard: SSH `sudo cat` -> StreamDigest -> parts -> parallel multipart upload;
   (b) naive: copy to local disk (paramiko SFTP, and OpenSSH scp), boto3 upload_file, sha256;
   (c) each component alone: the SSH read to nowhere, and the S3 upload from memory;
4. prints the numbers and PASS/MISS against the targets. Exit code 0 whatever the numbers.

Without --state-dir the cluster lives in a temporary directory removed at the end; with it, the
directory is kept (and a second run reuses the etcd data instead of filling it again).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from etcdguard_sim import layout
from etcdguard_sim.faults import s3proxy
from etcdguard_sim.runtime import control
from etcdguard_sim.seed import profiles

from bench import _cluster
from bench._stages import StageInput, StageOutput

__all__ = ["TARGETS", "main"]

_MiB = 1024 * 1024
TARGETS = {
    "a/b": 0.6,  # etcdguard takes at most 60 % of the naive way's time
    "a/max(c)": 1.25,  # and at most 25 % more than its slowest component alone
    "peak_rss_mib": 300.0,  # peak RSS of (a) for a 1 GiB snapshot
}
_ORDER = ("ssh-only", "s3-only", "etcdguard", "naive-sftp", "naive-scp")


class _Phases:
    def __init__(self) -> None:
        self.took: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        started = time.monotonic()
        try:
            yield
        finally:
            self.took[name] = time.monotonic() - started
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.took[name]:.1f} s", flush=True)


def _run_stage(cfg: StageInput) -> StageOutput:
    """One stage in a fresh interpreter; its JSON line back."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench._stages", json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Stage {cfg['stage']} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: StageOutput = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _mibps(nbytes: int, seconds: float) -> float:
    return nbytes / _MiB / seconds if seconds > 0 else float("inf")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _report(runs: dict[str, list[StageOutput]], *, snapshot: _cluster.HostSnapshot) -> None:
    size = snapshot.size
    results = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in runs.items()}
    print(f"\n== snapshot {snapshot.path} on {snapshot.node}: {size:,} bytes ({size / _MiB:.1f} MiB)")
    if any(len(rs) > 1 for rs in runs.values()):
        print(
            "fastest of the runs counts; every run (s): "
            + "; ".join(f"{name} " + " ".join(f"{r['seconds']:.2f}" for r in rs) for name, rs in runs.items())
        )
    print(
        f"{'stage':<12} {'seconds':>8} {'MiB/s':>8} {'CPU s':>6} {'machine CPU s':>13} {'cores busy':>10} "
        f"{'peak RSS MiB':>13} {'base RSS MiB':>13}  detail"
    )
    for name in _ORDER:
        r = results[name]
        detail = {
            k: (round(v, 2) if isinstance(v, float) else v) for k, v in r["detail"].items() if k != "sha256"
        }
        print(
            f"{name:<12} {r['seconds']:>8.2f} {_mibps(r['bytes'], r['seconds']):>8.1f} {r['cpu_seconds']:>6.2f} "
            f"{r['machine_cpu_seconds']:>13.1f} {r['machine_cpu_seconds'] / r['seconds']:>10.2f} "
            f"{r['peak_rss_kib'] / 1024:>13.1f} {r['baseline_rss_kib'] / 1024:>13.1f}  {detail}"
        )
    hashes = {r["detail"]["sha256"] for n in ("etcdguard", "naive-sftp", "naive-scp") for r in runs[n]}
    print(f"sha256 of the snapshot agrees across every etcdguard and naive run: {len(hashes) == 1}")
    a = results["etcdguard"]["seconds"]
    b_sftp = results["naive-sftp"]["seconds"]
    b_scp = results["naive-scp"]["seconds"]
    c_max = max(results["ssh-only"]["seconds"], results["s3-only"]["seconds"])
    peak = max(r["peak_rss_kib"] for r in runs["etcdguard"]) / 1024  # the worst run counts
    print("\n== targets")
    for label, b in (("paramiko SFTP", b_sftp), ("OpenSSH scp", b_scp)):
        ratio = a / b
        print(
            f"a/b  (b = {label:<13}) = {ratio:.2f}  target <= {TARGETS['a/b']}  {_verdict(ratio <= TARGETS['a/b'])}"
        )
    ratio = a / c_max
    print(
        f"a/max(c)                     = {ratio:.2f}  target <= {TARGETS['a/max(c)']}  {_verdict(ratio <= TARGETS['a/max(c)'])}"
    )
    scaled = (
        f" (snapshot is {size / _MiB:.0f} MiB, target is for 1 GiB)"
        if abs(size - 1024 * _MiB) > 128 * _MiB
        else ""
    )
    print(
        f"peak RSS of (a)              = {peak:.0f} MiB  target < {TARGETS['peak_rss_mib']:.0f} MiB  {_verdict(peak < TARGETS['peak_rss_mib'])}{scaled}"
    )


def run(
    *,
    size_mib: int,
    state_dir: Path,
    repeat: int = 1,
    s3: str = "direct",
    part_size_mib: int = 8,
    parallel_parts: int = 4,
) -> None:
    phases = _Phases()
    results: dict[str, list[StageOutput]] = {}
    spec: layout.SimSpec | None = None
    snapshot: _cluster.HostSnapshot | None = None
    try:
        with phases.phase("start the simulated cluster"):
            spec = control.up(state_dir)
            profile_dir = state_dir / "bench-profiles"
            storage = profiles.profile_data(spec)["storage"]
            if s3 == "direct":  # moto itself, not the fault-injecting proxy in front of it
                storage["endpoint_url"] = f"http://{spec.prefix}.200:{s3proxy.UPSTREAM_PORT}"
            storage.update(part_size_mib=part_size_mib, parallel_parts=parallel_parts)
            profiles.write_profile(spec, profile_dir, storage=storage)
            print(f"S3 for every stage: {storage['endpoint_url']} ({s3}); "
                  f"etcdguard parts: {part_size_mib} MiB x {parallel_parts} in flight", flush=True)  # fmt: skip
        quota = _cluster.backend_quota(spec)
        print(f"etcd member {spec.masters[0].name}: {quota}", flush=True)
        with phases.phase(f"fill etcd to {size_mib} MiB"):
            fill = _cluster.fill_etcd(spec, target_bytes=size_mib * _MiB)
            print(f"  {fill}", flush=True)
        print(f"etcd member {spec.masters[0].name}: {_cluster.backend_quota(spec)}", flush=True)
        with phases.phase("cluster-backup.sh on the host"):
            snapshot = _cluster.take_snapshot(spec)
            print(f"  {snapshot.path}: {snapshot.size:,} bytes", flush=True)
        base = StageInput(
            stage="",
            profile_dir=str(profile_dir),
            cluster=spec.cluster_name,
            node=snapshot.node,
            address=snapshot.address,
            path=snapshot.path,
            size=snapshot.size,
            local_dir=str(state_dir / "bench-local"),
            ssh_config=str(spec.state_dir / "ssh_config"),
        )
        # The naive way reads the file as core: make it readable (sudo cat does not care).
        _cluster.ssh(spec, spec.node(snapshot.node), f"sudo chmod 0644 {shlex.quote(snapshot.path)}")
        load_before = os.getloadavg()
        for round_ in range(1, repeat + 1):  # round-robin, so a burst of outside load hits one run
            for name in _ORDER:
                with phases.phase(f"stage {name} (run {round_}/{repeat})"):
                    results.setdefault(name, []).append(_run_stage({**base, "stage": name}))
        load_after = os.getloadavg()
        print(f"\nload average (1, 5, 15 min) before the stages {load_before}, after {load_after}")
        _report(results, snapshot=snapshot)
    finally:
        with phases.phase("stop the simulated cluster"):
            if spec is not None and snapshot is not None:
                try:
                    _cluster.ssh(spec, spec.node(snapshot.node), "sudo rm -rf -- /home/core/assets/bench")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"could not remove the snapshot on the host: {exc}", flush=True)
            control.down(state_dir)
        print("\n== phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.took.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backup_throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="how much to put in etcd (default 1024)")
    parser.add_argument(
        "--state-dir", type=Path, help="the simulator's state dir (kept); default: a temp dir"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each stage, round-robin; the fastest counts (default 1)",
    )
    parser.add_argument(
        "--s3",
        default="direct",
        help="direct: every stage talks to moto itself (default); proxy: through the simulator's "
        "fault-injecting S3 proxy, a second Python process relaying every byte",
    )
    parser.add_argument("--part-size-mib", type=int, default=8, help="etcdguard's part size (default 8)")
    parser.add_argument(
        "--parallel-parts", type=int, default=4, help="etcdguard's parts in flight (default 4)"
    )
    args = parser.parse_args(argv)
    if args.s3 not in ("direct", "proxy"):
        parser.error(f"--s3 {args.s3}: use direct or proxy.")
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat} must be 1 or more.")
    if args.size_mib < 8:
        parser.error(f"--size-mib {args.size_mib} is too small to measure anything: use 8 or more.")
    keep = args.state_dir is not None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="etcdguard-bench-")).resolve()
    try:
        run(
            size_mib=args.size_mib,
            state_dir=state_dir,
            repeat=args.repeat,
            s3=args.s3,
            part_size_mib=args.part_size_mib,
            parallel_parts=args.parallel_parts,
        )
    finally:
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
