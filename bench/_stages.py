"""The measured stages, each run in a fresh child process so its peak RSS is its own:

    python -m bench._stages '<json StageInput>'   -> one JSON line (StageOutput) on stdout

- `etcdguard`: `tasks.transfer.stream_to_store`, the loop the `upload` task runs
  (HostSession.stream -> StreamDigest -> streaming.parts -> ObjectStore.upload_parts), minus the
  Prefect logger and progress artifact. (No cipher column for it or `ssh-only`: HostSession does not
  say which cipher it negotiated; it prefers AES-GCM.)
- `naive-sftp` / `naive-scp`: copy the file to local disk (fabric/paramiko SFTP, or OpenSSH `scp`),
  boto3 `upload_file`, then sha256 of the local file.
- `ssh-only`: `HostSession.stream` to nowhere.  `s3-only`: `ObjectStore.upload_parts` fed the same
  number of bytes from memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import boto3
import botocore.config
import fabric
import paramiko

from etcdguard.clients.hosts import HostSession
from etcdguard.clients.objectstore import ObjectStore, read_credentials_file
from etcdguard.core import profile
from tasks import transfer

__all__ = ["STAGES", "StageInput", "StageOutput", "main"]


class StageInput(TypedDict):
    stage: str
    profile_dir: str
    cluster: str
    node: str
    address: str
    path: str  # the snapshot on the host
    size: int
    local_dir: str  # where the naive way lands the file
    ssh_config: str


class StageOutput(TypedDict):
    stage: str
    seconds: float
    bytes: int
    baseline_rss_kib: int  # after imports, before the work
    peak_rss_kib: int  # ru_maxrss of this process
    cpu_seconds: float  # user + system CPU of this process during the stage
    machine_cpu_seconds: float  # busy CPU of the whole machine (every process) during the stage
    detail: dict[str, Any]


def _machine_busy_seconds() -> float:
    """CPU seconds the machine has spent busy since boot (`/proc/stat`, all cores, not idle/iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# moto needs more than botocore's 60 s to answer CompleteMultipartUpload for a ~1 GiB object on a
# loaded 2-core machine (AWS keeps the connection alive with whitespace while it assembles the
# parts); the client then retries, and moto answers 500 to the second attempt. Every S3 client of
# the benchmark (etcdguard's, boto3's upload_file) gets the same longer read timeout, nothing else.
_READ_TIMEOUT = 900


def _store(prof: profile.ClusterProfile) -> ObjectStore:
    return ObjectStore(prof.storage, read_timeout=_READ_TIMEOUT)


def _client(prof: profile.ClusterProfile, *, config: botocore.config.Config | None = None) -> Any:
    storage = prof.storage
    creds = read_credentials_file(storage.credentials_file) if storage.credentials_file else {}
    return boto3.session.Session().client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        config=config or botocore.config.Config(read_timeout=_READ_TIMEOUT),
    )


def _cipher(transport: Any) -> str:
    """The negotiated cipher (and MAC, unless the cipher is an AEAD one that needs none)."""
    cipher = str(transport.remote_cipher)
    return cipher if "gcm" in cipher else f"{cipher} + {transport.remote_mac}"


def _etcdguard(cfg: StageInput, prof: profile.ClusterProfile, key: str) -> dict[str, Any]:
    """The `upload` task's own loop, `tasks.transfer.stream_to_store`, minus Prefect."""
    location = prof.storage.snapshots
    with (
        HostSession(prof.ssh, address=cfg["address"], node=cfg["node"]) as host,
        _store(prof) as store,
    ):
        done = transfer.stream_to_store(
            host,
            store,
            path=cfg["path"],
            bucket=location.bucket,
            key=key,
            storage=prof.storage,
            compress=prof.storage.compression == "zstd",
            check_trailer=True,
            kms_key_id=location.kms_key_id,
            tags={"etcdguard.io/cluster": prof.name, "etcdguard.io/kind": "snapshot"},
        )
    result = done.result
    if result.trailer != "present-valid":
        raise RuntimeError(f"The snapshot's sha256 trailer is {result.trailer}, not present-valid.")
    return {
        "parts": done.parts,
        "part_size_mib": prof.storage.part_size_mib,
        "parallel_parts": prof.storage.parallel_parts,
        "compression": prof.storage.compression,
        "sha256": result.sha256_original,
        "trailer": result.trailer,
        "stored": result.size_stored,
    }


def _naive(cfg: StageInput, prof: profile.ClusterProfile, key: str, *, copier: str) -> dict[str, Any]:
    """Land the file on local disk, upload it with boto3's managed transfer, hash it."""
    local = Path(cfg["local_dir"]) / "snapshot.db"
    local.parent.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Any] = {"cipher": "OpenSSH defaults"}
    started = time.monotonic()
    if copier == "sftp":  # fabric as an operator would use it: paramiko's defaults, known hosts checked
        conn = fabric.Connection(
            cfg["address"],
            user=prof.ssh.user,
            connect_kwargs={"key_filename": [str(prof.ssh.identity_file)], "look_for_keys": False},
        )
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_host_keys(str(prof.ssh.known_hosts))
        with conn:
            conn.get(cfg["path"], str(local))  # paramiko SFTP
            transport = conn.client.get_transport()
            steps["cipher"] = _cipher(transport)
    else:
        subprocess.run(
            [
                "scp",
                "-q",
                "-F",
                cfg["ssh_config"],
                "-o",
                "BatchMode=yes",
                f"{cfg['node']}:{cfg['path']}",
                str(local),
            ],
            check=True,
        )
    steps["copy_s"] = time.monotonic() - started
    mark = time.monotonic()
    s3 = _client(prof)
    try:
        s3.upload_file(str(local), prof.storage.snapshots.bucket, key)
    finally:
        s3.close()
    steps["upload_s"] = time.monotonic() - mark
    mark = time.monotonic()
    with local.open("rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    steps["sha256_s"] = time.monotonic() - mark
    size = local.stat().st_size
    local.unlink()
    return {**steps, "sha256": sha256, "local_size": size}


def _ssh_only(cfg: StageInput, prof: profile.ClusterProfile, key: str) -> dict[str, Any]:
    total = 0
    chunks = 0
    with HostSession(prof.ssh, address=cfg["address"], node=cfg["node"]) as host:
        for chunk in host.stream(cfg["path"], sudo=True):
            total += len(chunk)
            chunks += 1
    return {
        "read": total,
        "chunks": chunks,
        "mean_chunk_kib": round(total / max(chunks, 1) / 1024, 1),
    }


def _s3_only(cfg: StageInput, prof: profile.ClusterProfile, key: str) -> dict[str, Any]:
    part_size = prof.storage.part_size
    block = os.urandom(part_size)
    full, rest = divmod(cfg["size"], part_size)

    def generated() -> Iterator[bytes]:
        for _ in range(full):
            yield block
        if rest:
            yield block[:rest]

    with _store(prof) as store:
        upload = store.upload_parts(
            prof.storage.snapshots.bucket, key, generated(), parallel=prof.storage.parallel_parts
        )
    return {"parts": upload.parts, "uploaded": upload.size}


STAGES: dict[str, Callable[[StageInput, profile.ClusterProfile, str], dict[str, Any]]] = {
    "etcdguard": _etcdguard,
    "naive-sftp": lambda cfg, prof, key: _naive(cfg, prof, key, copier="sftp"),
    "naive-scp": lambda cfg, prof, key: _naive(cfg, prof, key, copier="scp"),
    "ssh-only": _ssh_only,
    "s3-only": _s3_only,
}


def run_stage(cfg: StageInput) -> StageOutput:
    prof = profile.load_profile(cfg["cluster"], directory=Path(cfg["profile_dir"]))
    key = f"bench/{cfg['stage']}-{time.time_ns()}.db"
    baseline = _vm_rss_kib()
    cpu = time.process_time()
    machine = _machine_busy_seconds()
    started = time.monotonic()
    detail = STAGES[cfg["stage"]](cfg, prof, key)
    seconds = time.monotonic() - started
    machine = _machine_busy_seconds() - machine
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cfg["stage"] != "ssh-only":  # free moto's memory for the next stage
        with _store(prof) as store:
            store.delete_keys(prof.storage.snapshots.bucket, [key])
    return StageOutput(
        stage=cfg["stage"],
        seconds=seconds,
        bytes=cfg["size"],
        baseline_rss_kib=baseline,
        peak_rss_kib=peak,
        cpu_seconds=cpu,
        machine_cpu_seconds=machine,
        detail=detail,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cfg: StageInput = json.loads(args[0])
    print(json.dumps(run_stage(cfg)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
