"""Benchmarks of etcdguard against the simulated cluster (`python -m bench.<name>`); see README.md."""
