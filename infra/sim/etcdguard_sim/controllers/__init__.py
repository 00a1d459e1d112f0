"""Controllers standing in for OpenShift's operators, run in one process next to the API server.

Each controller is a module with `reconcile(ctx: Context) -> None`, called about once a second
by `__main__`; a controller reads the cluster (API objects, the hosts' published state, etcd,
EC2) and moves it one step towards what the real operator would do. Errors are logged and the
next pass tries again, as a real controller requeues.
"""
