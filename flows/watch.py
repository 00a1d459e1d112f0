"""`watch-cluster-version`: notice upgrades, so a backup follows every upgrade (guide 4.1: take a
backup after each upgrade, on the new z-stream).

Runs every 15 minutes per cluster. The last Completed z-stream it saw is kept in a Prefect
Variable; when the cluster's first Completed ClusterVersion history entry differs, it emits
`etcdguard.cluster.upgraded`, which triggers the cluster's `etcd-backup` deployment.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.variables import Variable

from etcdguard.clients.kube import KubeClient
from etcdguard.core import profile, versions
from flows._prefect import send_event
from tasks import _policy as policy

__all__ = ["watch_cluster_version"]


@policy.task("read-zstream", timeout_s=300)
def read_zstream(cluster_profile: profile.ClusterProfile) -> tuple[str, bool]:
    with KubeClient(cluster_profile.api) as kube:
        clusterversion = kube.get("ClusterVersion", "version")
    return versions.current_zstream(clusterversion), versions.is_upgrading(clusterversion)


@flow(name="watch-cluster-version")
def watch_cluster_version(cluster: str) -> str:
    """Emit `etcdguard.cluster.upgraded` when `cluster` has completed an upgrade since the last look."""
    logger = get_run_logger()
    cluster_profile = profile.load_profile(cluster)
    version, upgrading = read_zstream(cluster_profile)
    name = f"etcdguard_zstream_{cluster.replace('-', '_')}"
    seen = Variable.get(name, default=None)
    if upgrading:
        logger.info("%s is upgrading from %s; waiting for it to complete.", cluster, version)
        return version
    if seen is None:
        Variable.set(name, version, overwrite=True)
        logger.info("First look at %s: it runs %s.", cluster, version)
    elif seen != version:
        Variable.set(name, version, overwrite=True)
        logger.info("%s was upgraded from %s to %s: triggering a backup.", cluster, seen, version)
        send_event("etcdguard.cluster.upgraded", cluster=cluster, payload={"from": str(seen), "to": version})
    return version
