"""The Prefect UI in Debian's headless Chromium, driven by Playwright, against what `make ui`
serves (the same `python -m etcdguard_sim.harness.ui`, on a cluster of its own):

1. restore-cluster is started from its deployment page with the run form, the run pauses, the
   approval form (what will be destroyed) is filled in and submitted, and the run completes: a
   namespace created after the backup is gone, the run's report names the approver;
2. the run forms of the other on-demand flows (replace-etcd-member, recover-expired-certs,
   graceful-shutdown, graceful-restart) show their parameters with descriptions, and a
   recover-expired-certs run started from its form completes and shows its report.

Screenshots of every step go to `$ETCDGUARD_SCREENSHOTS` (default `.state/screenshots/`); a step
that cannot be done fails the test (Playwright's timeouts), naming the step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from etcdguard_sim import layout
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests import simtools

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(1200)]

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]


class Shots:
    """Numbered screenshots of one test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.png"):
            old.unlink()
        self.count = 0

    def take(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`make ui` (`python -m etcdguard_sim.harness.ui`) in the background until its `ui.json` appears."""
    state_dir = tmp_path_factory.mktemp("ui")
    log = state_dir / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "etcdguard_sim.harness.ui", "--state-dir", str(state_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 600
        while not (state_dir / "ui.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make ui` did not get ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        info: dict[str, Any] = json.loads((state_dir / "ui.json").read_text())
        info["state_dir"] = state_dir
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text()[-1500:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    base = Path(os.environ.get("ETCDGUARD_SCREENSHOTS", ROOT / ".state" / "screenshots"))
    return Shots(base / request.node.name)


def _field(scope: Locator, label: str) -> Locator:
    """One property of a Prefect schema form, by its label (the UI appends ' (Optional)')."""
    return scope.locator(".schema-form-property").filter(
        has=scope.page.locator(
            ".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
        )
    )


def _open_run_form(page: Page, deployment_page: str) -> None:
    """The deployment page's Run button -> Custom run: the typed form of the flow's parameters."""
    page.goto(deployment_page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    expect(page.get_by_role("button", name="Submit")).to_be_visible()


def _flow_runs(api_url: str, deployment_page: str) -> set[str]:
    """The ids of the deployment's flow runs (`POST /flow_runs/filter`)."""
    deployment_id = deployment_page.rstrip("/").rsplit("/", 1)[-1]
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    runs = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30).raise_for_status().json()
    return {str(run["id"]) for run in runs}


def _submit_and_open_run(page: Page, ui: dict[str, Any], deployment: str) -> str:
    """Submit the run form, then open the run it created on its own page. (The run is found through
    the API: the deployment page's run list hides Scheduled runs and refreshes on its own time.)"""
    deployment_page = ui["deployments"][deployment]
    before = _flow_runs(ui["api_url"], deployment_page)
    page.get_by_role("button", name="Submit").click()
    deadline = time.monotonic() + 60
    while not (created := _flow_runs(ui["api_url"], deployment_page) - before):
        assert time.monotonic() < deadline, f"submitting the {deployment} form created no flow run in 60 s"
        time.sleep(1)
    assert len(created) == 1, f"one Submit created {len(created)} runs: {sorted(created)}"
    run_id = created.pop()
    page.goto(f"{ui['ui_url']}/runs/flow-run/{run_id}")
    return run_id


def _wait_for_state(page: Page, state: str, timeout_s: float) -> None:
    """The state badge at the top of a flow run page; the page is reloaded every 10 s."""
    badge = page.locator(".state-badge").first
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            expect(badge).to_have_text(re.compile(state), timeout=10_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the run did not reach {state} within {timeout_s:.0f} s (badge: {badge.inner_text()!r})"
                ) from None
            page.reload()


def _artifact_id(api_url: str, key: str) -> str:
    """The newest artifact with `key`, through the server's REST API (`POST /artifacts/filter`)."""
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    found = httpx.post(f"{api_url}/artifacts/filter", json=body, timeout=30).raise_for_status().json()
    assert found, f"no artifact {key!r} on the server"
    return str(found[0]["id"])


def _open_report(page: Page, ui: dict[str, Any], key: str, shots: Shots, name: str) -> Locator:
    """The run's Artifacts tab, then the artifact `key` (the run's markdown report) on its page."""
    page.get_by_text("Artifacts", exact=True).click()
    expect(page.get_by_text(key, exact=True).first).to_be_visible()
    shots.take(page, f"{name}-artifacts")
    page.goto(f"{ui['ui_url']}/artifacts/artifact/{_artifact_id(ui['api_url'], key)}")
    report = page.locator(".markdown-renderer").filter(has_text=key.split("-")[0]).first
    expect(report).to_be_visible()
    shots.take(page, f"{name}-report")
    return page.locator("body")


def _namespaces(info: dict[str, Any]) -> list[str]:
    out = simtools.kubectl(layout.SimSpec.load(info["state_dir"]), "get", "namespaces", "-o", "name").stdout
    return [line.removeprefix("namespace/") for line in out.splitlines()]


def test_restore_cluster_from_the_deployment_page(ui: dict[str, Any], page: Page, shots: Shots) -> None:
    cluster = ui["cluster"]
    # A change after the backup: the restore must take it back.
    simtools.kubectl(layout.SimSpec.load(ui["state_dir"]), "create", "namespace", "made-after-the-backup")
    assert "made-after-the-backup" in _namespaces(ui)

    page.goto(f"{ui['ui_url']}/deployments")
    expect(page.get_by_text("restore-cluster").first).to_be_visible()
    shots.take(page, "deployments")

    _open_run_form(page, ui["deployments"][f"restore-cluster/{cluster}"])
    expect(_field(page.locator("body"), "cluster").locator("textarea")).to_have_value(cluster)
    expect(_field(page.locator("body"), "backup")).to_contain_text("newest verified")
    shots.take(page, "restore-cluster-run-form")
    _submit_and_open_run(page, ui, f"restore-cluster/{cluster}")

    _wait_for_state(page, "Paused", timeout_s=180)
    shots.take(page, "restore-cluster-paused")
    page.get_by_role("button", name="Resume").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This is destructive")
    expect(dialog).to_contain_text("recovery host")
    shots.take(page, "approval-form")
    _field(dialog, "Confirm Cluster").locator("textarea").fill(cluster)
    _field(dialog, "Reason").locator("textarea").fill("INC-4242 browser drill")
    _field(dialog, "Approved By").locator("textarea").fill("sre-browser")
    switch = _field(dialog, "Approve").get_by_role("switch")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    shots.take(page, "approval-filled")
    dialog.get_by_role("button", name="Submit").click()
    expect(dialog).to_be_hidden()

    _wait_for_state(page, "Completed", timeout_s=900)
    shots.take(page, "restore-cluster-completed")
    report = _open_report(page, ui, f"restore-cluster-{cluster}", shots, "restore-cluster")
    expect(report).to_contain_text("sre-browser")
    expect(report).to_contain_text("INC-4242 browser drill")

    assert "made-after-the-backup" not in _namespaces(ui)


FORMS = {
    "replace-etcd-member": ["member", "wait_for_machine_s", "backup_max_age_h", "approval_timeout_s"],
    "recover-expired-certs": ["timeout_s", "poll_s"],
    "graceful-shutdown": ["backup_max_age_h", "force", "method", "approval_timeout_s"],
    "graceful-restart": ["timeout_s", "poll_s"],
}


def test_the_other_recovery_forms_and_a_report(ui: dict[str, Any], page: Page, shots: Shots) -> None:
    cluster = ui["cluster"]
    body = page.locator("body")
    for flow_name, fields in FORMS.items():
        _open_run_form(page, ui["deployments"][f"{flow_name}/{cluster}"])
        for name in ["cluster", *fields]:
            expect(_field(body, name)).to_be_visible()
        # Every parameter has its description from the flow's docstring.
        for name in fields:
            expect(_field(body, name).locator(".schema-form-property__description")).not_to_be_empty()
        shots.take(page, f"{flow_name}-run-form")

    _open_run_form(page, ui["deployments"][f"recover-expired-certs/{cluster}"])
    _submit_and_open_run(page, ui, f"recover-expired-certs/{cluster}")
    _wait_for_state(page, "Completed", timeout_s=300)
    shots.take(page, "recover-expired-certs-completed")
    report = _open_report(page, ui, f"recover-expired-certs-{cluster}", shots, "recover-expired-certs")
    expect(report).to_contain_text("Ready")
