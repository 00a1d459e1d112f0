"""`make ui`: the Prefect UI over a simulated cluster, every etcdguard deployment served.

1. start the simulated OpenShift 4.8.12 cluster and its S3 (`etcdguard-sim up`), write its profile;
2. start a Prefect server (PREFECT_HOME under the state dir) and `python -m deployments serve`
   (every deployment of every profile, run by this machine);
3. take one backup through the `etcd-backup` deployment (forced: outside the off-peak window too),
   so that restore-cluster and replace-etcd-member have a verified backup to work from;
4. write `DIR/ui.json` (the URLs, the cluster, the deployments' pages) and print them;
5. run until Ctrl-C or SIGTERM, then stop the serve process, the Prefect server and the cluster.

The faults to try the recovery flows on: `etcdguard-sim fault --state-dir DIR --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from etcdguard_sim import cli
from etcdguard_sim.harness import prefectserver
from etcdguard_sim.runtime import control
from etcdguard_sim.seed import profiles

__all__ = ["main"]


class _Stop(Exception):
    """SIGTERM or SIGINT: leave `_wait_forever` and clean up."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _start_serve(state_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(state_dir / "logs" / "deployments-serve.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments", "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    log.close()
    return proc


def _served_deployments(expected: int, serve: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    """Wait until the serve process has registered `expected` deployments; name -> id."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if serve.poll() is not None:
                raise RuntimeError(f"`python -m deployments serve` exited with {serve.returncode}")
            flows = {f.id: f.name for f in client.read_flows()}
            found = {f"{flows.get(d.flow_id, '?')}/{d.name}": str(d.id) for d in client.read_deployments()}
            if len(found) >= expected:
                return found
            time.sleep(1)
    raise RuntimeError(f"only {len(found)} of {expected} deployments were served within {timeout:.0f} s")


def _first_backup(cluster: str) -> str:
    """One forced backup through the served deployment; returns the flow run's id."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = run_deployment(
        f"etcd-backup/{cluster}", parameters={"cluster": cluster, "force": True}, timeout=900
    )
    if not isinstance(run, FlowRun):  # only when called from async code, which this is not
        raise TypeError("run_deployment returned a coroutine")
    if run.state is None or not run.state.is_completed():
        name = run.state.name if run.state else "no state"
        raise RuntimeError(f"the first backup (flow run {run.id}) ended {name}; see the Prefect UI")
    return str(run.id)


def _wait_forever() -> None:
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdguard_sim.harness.ui")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--no-backup", action="store_true", help="do not take the first backup")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    (state_dir / "ui.json").unlink(missing_ok=True)
    server: subprocess.Popen[bytes] | None = None
    serve: subprocess.Popen[bytes] | None = None
    try:
        spec = control.up(state_dir)
        cli._print_up(spec)
        profile_dir = state_dir / "profiles"
        profiles.write_profile(spec, profile_dir)
        os.environ.update(
            ETCDGUARD_PROFILES=str(profile_dir),
            PREFECT_HOME=str(state_dir / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            # The served runner looks for new runs every 2 s instead of 10 s.
            PREFECT_RUNNER_POLL_FREQUENCY="2",
        )
        server, api_url = prefectserver.start(state_dir)
        os.environ["PREFECT_API_URL"] = api_url
        ui_url = api_url.removesuffix("/api")
        serve = _start_serve(state_dir, os.environ.copy())
        from deployments.build import build_all

        deployments = _served_deployments(len(build_all(profile_dir)), serve, timeout=180)
        print(f"\nPrefect UI: {ui_url}  ({len(deployments)} deployments served)")
        backup_run = None
        if not args.no_backup:
            print(
                f"taking the first backup of {spec.cluster_name} through etcd-backup/{spec.cluster_name} ..."
            )
            backup_run = _first_backup(spec.cluster_name)
            print(f"  done: {ui_url}/runs/flow-run/{backup_run}")
        pages = {name: f"{ui_url}/deployments/deployment/{dep_id}" for name, dep_id in deployments.items()}
        info = {
            "ui_url": ui_url,
            "api_url": api_url,
            "cluster": spec.cluster_name,
            "kubeconfig": str(spec.kubeconfig),
            "profiles": str(profile_dir),
            "first_backup_run": backup_run,
            "deployments": {
                name: f"{ui_url}/deployments/deployment/{dep_id}" for name, dep_id in deployments.items()
            },
        }
        (state_dir / "ui.json").write_text(json.dumps(info, indent=2) + "\n")
        for name, page in sorted(pages.items()):
            print(f"  {name:<34} {page}")
        print(
            f"\nReady ({state_dir / 'ui.json'}). Faults to recover from: "
            f"etcdguard-sim fault --state-dir {state_dir} --help. Ctrl-C stops everything."
        )
        sys.stdout.flush()
        _wait_forever()
    except _Stop as stop:
        print(f"\n{stop}: stopping")
    except (control.SimError, RuntimeError) as exc:
        print(f"ui: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if serve is not None:
            prefectserver.stop(serve)
        if server is not None:
            prefectserver.stop(server)
        control.down(state_dir)
        (state_dir / "ui.json").unlink(missing_ok=True)
        print("Stopped the deployments, the Prefect server and the simulated cluster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
