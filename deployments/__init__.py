"""Deployments: one `etcd-backup` (and one `watch-cluster-version`) per cluster profile.

    python -m deployments apply [--profiles DIR]   register/update them (idempotent)
    python -m deployments serve [--profiles DIR]   register them and run them in this process

The backup runs at the start of the profile's off-peak window in its time zone (DST-safe,
see `etcdguard.core.schedule`), with a deployment concurrency limit of one (a run that would overlap
is cancelled, not queued), and right after an upgrade completes (`etcdguard.cluster.upgraded`).
"""
