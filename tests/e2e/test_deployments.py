"""Deployments are applied idempotently to a real Prefect server: one etcd-backup per profile,
scheduled at the window's start in its zone (DST-safe), one run at a time, and triggered after
an upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcdguard_sim import layout
from etcdguard_sim.seed import profiles
from prefect.client.orchestration import get_client

from deployments.__main__ import main

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


def test_apply_is_idempotent_and_schedules_the_window(
    sim: layout.SimSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "profiles"
    profiles.write_profile(
        sim, directory, window={"timezone": "Europe/Berlin", "start": "02:30", "end": "05:00"}
    )

    assert main(["apply", "--profiles", str(directory)]) == 0
    first = capsys.readouterr().out
    assert main(["apply", "--profiles", str(directory)]) == 0
    second = capsys.readouterr().out
    assert first == second  # same deployments, same ids
    assert "etcd-backup/demo:" in first
    assert "restore-drill/demo:" in first
    assert "etcd-retention/demo:" in first
    assert "watch-cluster-version/demo:" in first

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("etcd-backup/demo")
        [sched] = deployment.schedules
        assert sched.schedule.cron == "0 3 * * *"  # 02:30 is inside Berlin's DST hour: moved to 03:00
        assert sched.schedule.timezone == "Europe/Berlin"
        assert deployment.parameters == {"cluster": "demo", "force": False, "prune": True}
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
        assert "daylight-saving" in (deployment.description or "")
        automations = client.read_automations_by_name("backup demo after an upgrade")
        assert len(automations) == 1
        assert automations[0].trigger.expect == {"etcdguard.cluster.upgraded"}  # type: ignore[union-attr]


def test_an_invalid_profile_stops_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "profiles"
    directory.mkdir()
    (directory / "broken.yaml").write_text("name: broken\napi: {}\n")
    assert main(["apply", "--profiles", str(directory)]) == 2
    assert "api.kubeconfig: Field required" in capsys.readouterr().err
