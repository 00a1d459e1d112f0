"""etcdguard: OpenShift control-plane backup and disaster recovery as Prefect 3 flows.

The package is the plain-Python core (models, policies, the backup catalogue layout) and the
clients; it deliberately imports nothing here, so `import etcdguard.core.keys` stays cheap.
"""

__all__: list[str] = []
