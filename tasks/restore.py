"""Host-side tasks of the restore-cluster flow (guide 4.3.2.2 steps 3-8), over SSH.

Each task does one step on one host and first checks whether the step is already done, so a
re-run after an interruption never repeats a destructive step: the backup files already in
`/home/core/backup` with the right sha256 are kept, a manifest already moved is not moved again,
a data directory already moved aside stays where it is, and `cluster-restore.sh` runs once per
restore (a marker written in the same command as the script, plus the journal).
"""

from __future__ import annotations

import functools
import hashlib
import shlex
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import zstandard
from prefect import get_run_logger

from etcdguard.clients.hosts import HostSession
from etcdguard.clients.objectstore import ObjectStore
from etcdguard.core import errors, restore_plan
from etcdguard.core.profile import ClusterProfile
from tasks import _policy as policy
from tasks import _wait, catalogue

__all__ = [
    "BACKUP_DIR",
    "JOURNAL",
    "RERUN_HINT",
    "clean_up_host",
    "copy_backup",
    "poll",
    "probe_host",
    "restart_kubelet",
    "run_restore_script",
    "stop_static_pods",
    "wait_etcd_container",
    "write_journal",
]

BACKUP_DIR = "/home/core/backup"
JOURNAL = f"{BACKUP_DIR}/etcdguard-restore.json"
RESTORED_MARKER = f"{BACKUP_DIR}/.etcdguard-restored"
_ETCD_ENV = "/etc/kubernetes/static-pod-resources/etcd-certs/configmaps/etcd-scripts/etcd.env"
_CV_KEY = "/kubernetes.io/config.openshift.io/clusterversions/version"
_PROXY_KEY = "/kubernetes.io/config.openshift.io/proxies/cluster"


RERUN_HINT = "run restore-cluster again: it continues where it stopped."


def poll(what: str, probe: Callable[[], tuple[bool, str]], *, timeout: float, first: float = 1.0) -> str:
    """`tasks._wait.poll` with this flow's re-run advice."""
    return _wait.poll(
        what,
        probe,
        timeout=timeout,
        first=first,
        rerun_hint=RERUN_HINT,
    )


def _session(profile: ClusterProfile, node: str, address: str) -> HostSession:
    return HostSession(profile.ssh, address=address, node=node)


def _sh(host: HostSession, script: str, *, timeout: float = 60.0, check: bool = True) -> str:
    return host.run(["sh", "-c", script], sudo=True, timeout=timeout, check=check).stdout


@policy.task("probe-host", timeout_s=300, retries=1)
def probe_host(
    profile: ClusterProfile, *, name: str, address: str, read_version: bool
) -> restore_plan.HostProbe:
    """Read-only: can SSH reach the host; does it hold etcd data, run etcd, hold a restore journal;
    (with `read_version`) which ClusterVersion and Proxy its etcd member holds (a serializable
    read needs no quorum)."""
    try:
        with _session(profile, name, address) as host:
            out = _sh(
                host,
                "test -d /var/lib/etcd/member && echo DATA; "
                'test -n "$(crictl ps --label io.kubernetes.container.name=etcd -q)" && echo ETCD; true',
            )
            journal = _sh(host, f"cat {JOURNAL} 2>/dev/null || true").strip() or None
            held: dict[str, str | None] = {_CV_KEY: None, _PROXY_KEY: None}
            for key in held if read_version and "ETCD" in out else ():
                read = host.run(
                    [
                        "sh",
                        "-c",
                        f". {_ETCD_ENV} && PATH=$PATH:/etc/kubernetes/static-pod-resources/bin "
                        f"ETCDCTL_ENDPOINTS=https://{address}:2379 etcdctl --command-timeout=5s get "
                        f"--consistency=s --print-value-only {key}",
                    ],
                    sudo=True,
                    timeout=30,
                    check=False,
                )
                held[key] = (read.stdout.strip() or None) if read.exit_code == 0 else None
    except errors.TransientError as exc:
        return restore_plan.HostProbe(name=name, address=address, reachable=False, error=str(exc))
    except errors.RemoteCommandFailed:
        raise
    except errors.PermanentError as exc:
        return restore_plan.HostProbe(
            name=name, address=address, reachable=False, error=str(exc), permanent=True
        )
    return restore_plan.HostProbe(
        name=name,
        address=address,
        reachable=True,
        etcd_running="ETCD" in out,
        data_dir="DATA" in out,
        journal=journal,
        clusterversion=held[_CV_KEY],
        proxy=held[_PROXY_KEY],
    )


@policy.task("write-journal", timeout_s=300)
def write_journal(profile: ClusterProfile, *, journal: restore_plan.RestoreJournal) -> None:
    """Write (replace) the restore journal on the recovery host."""
    with _session(profile, journal.recovery_node, journal.recovery_address) as host:
        host.run(["mkdir", "-p", BACKUP_DIR], sudo=True)
        host.upload(JOURNAL + ".tmp", [journal.to_json().encode()], sudo=True)
        host.run(["mv", "-f", JOURNAL + ".tmp", JOURNAL], sudo=True)


def _original_chunks(
    store: ObjectStore, bucket: str, key: str, compressed: bool, digest: Any
) -> Iterator[bytes]:
    decompressor = zstandard.ZstdDecompressor().decompressobj() if compressed else None
    for chunk in store.iter_object(bucket, key):
        plain = decompressor.decompress(chunk) if decompressor is not None else chunk
        if plain:
            digest.update(plain)
            yield plain


@policy.task("copy-backup", timeout_s=3600)
def copy_backup(
    profile: ClusterProfile, *, node: str, address: str, entry: catalogue.CatalogueEntry
) -> list[str]:
    """Step 3: put the snapshot and the static-pod-resources tarball in /home/core/backup on the
    recovery host, streamed from S3, checked with sha256 on both ends. Files already there with the
    right sha256 are kept; any other snapshot or tarball in the directory is removed, since
    cluster-restore.sh takes the newest one it finds."""
    logger = get_run_logger()
    backup = entry.manifest
    stamp = backup.snapshot_file.backup_key.datestring
    wanted = {"snapshot": f"snapshot_{stamp}.db", "static_resources": f"static_kuberesources_{stamp}.tar.gz"}
    done = []
    with _session(profile, node, address) as host, ObjectStore(profile.storage) as store:
        host.run(["mkdir", "-p", BACKUP_DIR], sudo=True)
        keep = " ".join(shlex.quote(n) for n in wanted.values())
        _sh(
            host,
            f'cd {BACKUP_DIR} && for f in snapshot* static_kuberesources*; do [ -e "$f" ] || continue; '
            f'case " {keep} " in *" $f "*) ;; *) rm -f -- "$f"; echo removed $f;; esac; done',
        )
        for file in backup.files:
            path = f"{BACKUP_DIR}/{wanted[file.kind]}"
            existing = _sh(host, f"sha256sum {shlex.quote(path)} 2>/dev/null | cut -d' ' -f1 || true").strip()
            if existing == file.sha256_original:
                logger.info("%s is already on %s with the right sha256; kept.", path, node)
                done.append(f"{path} (already there)")
                continue
            started = time.monotonic()
            digest = hashlib.sha256()
            bucket = catalogue.bucket_for(profile.storage, file)
            sent = host.upload(
                path, _original_chunks(store, bucket, file.key, file.compressed == "zstd", digest), sudo=True
            )
            remote = _sh(host, f"sha256sum {shlex.quote(path)} | cut -d' ' -f1").strip()
            if digest.hexdigest() != file.sha256_original or remote != file.sha256_original:
                host.run(["rm", "-f", "--", path], sudo=True)
                raise errors.IntegrityError(
                    f"{path} on {node} has sha256 {remote} (streamed {digest.hexdigest()}); the manifest says "
                    f"{file.sha256_original}. The copy was removed; run again."
                )
            logger.info(
                "Copied %s to %s:%s (%d bytes, %.1f s), sha256 verified.",
                file.key,
                node,
                path,
                sent,
                time.monotonic() - started,
            )
            done.append(path)
    return done


def _gone(host: HostSession, name: str) -> tuple[bool, str]:
    out = _sh(host, f"crictl ps | grep {shlex.quote(name)} | grep -v operator || true").strip()
    return (
        not out,
        f"`crictl ps | grep {name}` on {host.node} still shows: {out[:300]}" if out else "stopped",
    )


@policy.task("stop-static-pods", timeout_s=300)
def stop_static_pods(
    profile: ClusterProfile, *, node: str, address: str, timeout: float = 300.0
) -> list[str]:
    """Step 4 on a host that is not the recovery host: move `etcd-pod.yaml` out of the manifests
    and wait until crictl shows no etcd, the same for `kube-apiserver-pod.yaml`, then move
    /var/lib/etcd aside (to /tmp, as the guide does). Each move happens only if still needed."""
    logger = get_run_logger()
    actions = []
    with _session(profile, node, address) as host:
        for pod, container in (("etcd-pod.yaml", "etcd"), ("kube-apiserver-pod.yaml", "kube-apiserver")):
            source = f"/etc/kubernetes/manifests/{pod}"
            moved = _sh(host, f"if [ -f {source} ]; then mv {source} /tmp && echo moved; fi").strip()
            if moved:
                actions.append(f"moved {source} to /tmp")
                logger.info("%s: moved %s to /tmp.", node, source)
            poll(f"{container} to stop on {node}", functools.partial(_gone, host, container), timeout=timeout)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = _sh(
            host,
            "if [ -e /var/lib/etcd ]; then if [ -e /tmp/etcd ]; then mv /var/lib/etcd /tmp/etcd-"
            f"{stamp} && echo /tmp/etcd-{stamp}; else mv /var/lib/etcd/ /tmp && echo /tmp/etcd; fi; fi",
        ).strip()
        if moved:
            actions.append(f"moved /var/lib/etcd to {moved}")
            logger.info("%s: moved /var/lib/etcd to %s.", node, moved)
    return actions or ["already stopped, data directory already moved"]


@policy.task("cluster-restore.sh", timeout_s=3600, retries=0)
def run_restore_script(
    profile: ClusterProfile, *, node: str, address: str, proxy_env: dict[str, str], started_before: bool
) -> str:
    """Step 7: `sudo -E /usr/local/bin/cluster-restore.sh /home/core/backup` on the recovery host,
    with the proxy variables. Runs once: skipped when its marker exists, or when an earlier run
    started it (`started_before`) and its effects are there (old data in /var/lib/etcd-backup, a
    restored member in /var/lib/etcd). Never retried automatically: a second run would restore
    the snapshot again over a running single-member cluster."""
    logger = get_run_logger()
    with _session(profile, node, address) as host:
        state = _sh(
            host,
            f"test -f {RESTORED_MARKER} && echo MARKER; test -d /var/lib/etcd-backup/member && echo OLD; "
            "test -d /var/lib/etcd/member && echo NEW; true",
        )
        if "MARKER" in state or (started_before and "OLD" in state and "NEW" in state):
            logger.info("cluster-restore.sh already ran on %s; not running it again.", node)
            return "already done"
        started = time.monotonic()
        result = host.run(
            ["sh", "-c", f"/usr/local/bin/cluster-restore.sh {BACKUP_DIR} && touch {RESTORED_MARKER}"],
            sudo=True,
            env=proxy_env,
            timeout=900,
        )
    for line in result.stdout.splitlines()[-20:]:
        logger.info("cluster-restore.sh: %s", line)
    return f"ran in {time.monotonic() - started:.1f} s"


@policy.task("restart-kubelet", timeout_s=300)
def restart_kubelet(profile: ClusterProfile, *, node: str, address: str) -> None:
    """Step 8: `sudo systemctl restart kubelet.service` (harmless to repeat)."""
    with _session(profile, node, address) as host:
        host.run(["systemctl", "restart", "kubelet.service"], sudo=True)


@policy.task("wait-etcd-container", timeout_s=7200)
def wait_etcd_container(profile: ClusterProfile, *, node: str, address: str, timeout: float) -> str:
    """Step 10a: on the recovery host, `crictl ps` shows the etcd container running."""
    with _session(profile, node, address) as host:

        def probe() -> tuple[bool, str]:
            out = _sh(host, "crictl ps --label io.kubernetes.container.name=etcd --state running -q").strip()
            return bool(
                out
            ), f"etcd container {out[:13]} runs on {node}" if out else f"no etcd container on {node}"

        return poll(f"the restored etcd to run on {node}", probe, timeout=timeout)


@policy.task("clean-up-host", timeout_s=300)
def clean_up_host(profile: ClusterProfile, *, node: str, address: str) -> None:
    """After a completed restore: remove /home/core/backup from the recovery host (the tarball
    holds the etcd encryption keys) with the journal and marker, so a later restore starts fresh."""
    with _session(profile, node, address) as host:
        host.run(["rm", "-rf", "--", BACKUP_DIR], sudo=True)
