"""The pure core: decisions over data with an explicit `now`.

Nothing in this package imports Prefect, an SDK (kubernetes, fabric/paramiko, boto3) or any other
etcdguard package: `.importlinter` forbids it for the whole package, so a new module here is
covered without being listed.
"""
