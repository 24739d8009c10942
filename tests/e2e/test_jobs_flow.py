"""Backups through the portal on the lab with the built-in local appliance: an administrator adds a repository
and a job (VM picker, a read limit), follows a run live over the websocket, cancels a second run while a viewer
watches it, and restores a VM as a new VM whose disks must equal the source's byte for byte."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from inventory.connectors.lab.connector import LabConnector
from tests.e2e.conftest import ARTIFACTS, log_in

pytestmark = pytest.mark.browser

VMS = ("web-01", "db-01", "app-01")  # the first three VMs the lab seeds
LARGEST = "db-01"  # two disks: the longest backup of the three
DISK_SIZE = "6M"  # wholly written: db-01 reads 12.6 MB at 1 MB/s, the others half as much
VIEWER, VIEWER_PASSWORD = "e2e-viewer", "E2e-Viewer-Pass-42"
REFUSED = "Only operators and administrators can do this"
ACTIVE_TASK_STATES = ("queued", "running")

# A second socket to the run, as a viewer: asks to cancel, returns the first reply (or how the socket closed).
CANCEL_OVER_SOCKET = """async (path) => await new Promise((resolve) => {
  const socket = new WebSocket("ws://" + location.host + path);
  const done = (result) => { socket.close(); resolve(result); };
  socket.onopen = () => socket.send(JSON.stringify({cancel: true}));
  socket.onmessage = (event) => done({opened: true, reply: JSON.parse(event.data)});
  socket.onclose = (event) => resolve({opened: false, code: event.code});
  setTimeout(() => done({opened: true, reply: null}), 5000);
})"""


@pytest.fixture(scope="module")
def lab_root(live_system):
    root = live_system.var_dir / "e2e-jobs-lab"
    live_system.manage("lab", "seed", "--root", str(root), "--vms", str(len(VMS)), "--disk-size", DISK_SIZE,
                       "--fill", "1")  # adds and syncs the connection "Lab"
    live_system.manage("fleet", "local", "--connection", "Lab")
    live_system.manage("shell", "-c", (
        "from django.contrib.auth.models import Group, User; "
        f"user = User.objects.create_user({VIEWER!r}, password={VIEWER_PASSWORD!r}); "
        "user.groups.add(Group.objects.get_or_create(name='viewer')[0])"))
    return root


@pytest.fixture
def viewer_page(browser, live_system):
    context = browser.new_context(base_url=live_system.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def percents(frames: list[dict]) -> list[int]:
    """Every progress percent the frames carried (task states, progress events, run totals), in order."""
    found = []
    for frame in frames:
        data = frame.get("data") or {}
        if frame.get("event") in ("task.state", "run.state") and data.get("percent") is not None:
            found.append(data["percent"])
        elif frame.get("event") == "task.event" and data.get("kind") == "progress":
            progress = data.get("data") or {}
            done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
            if total:
                found.append(100 * done // total)
    return found


def collect_frames(page) -> list[dict]:
    frames: list[dict] = []

    def on_socket(socket) -> None:
        socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return frames


def add_repository_and_job(page, repository_folder: str) -> None:
    page.goto("/jobs/repositories/add/")
    page.get_by_role("textbox", name="Name", exact=True).fill("e2e repo")
    page.get_by_label("Type").select_option("local")
    page.get_by_role("textbox", name="Folder", exact=True).fill(repository_folder)
    page.get_by_label("Passphrase", exact=True).fill("Repo-Passphrase-1")
    page.get_by_label("Passphrase (again)").fill("Repo-Passphrase-1")
    page.get_by_role("button", name="Add repository").click()
    expect(page.get_by_role("heading", name=re.compile("e2e repo"))).to_be_visible()

    page.goto("/jobs/add/")
    page.get_by_role("textbox", name="Name", exact=True).fill("e2e nightly")
    page.get_by_role("combobox", name="Repository").select_option(label="e2e repo")
    with page.expect_response(re.compile("/jobs/vm-choices/")):
        page.get_by_label("Connection").select_option(label="Lab")
    for name in VMS:
        page.locator("#vm-matches").get_by_label(name, exact=True).check()
    expect(page.locator("#vm-chosen [data-vm]")).to_have_count(len(VMS))
    page.get_by_role("spinbutton", name="VMs at once").fill(str(len(VMS)))
    page.get_by_label("Read limit per VM (MB/s)").fill("1")
    page.get_by_label("Use changed block tracking").uncheck()  # the second run reads every disk again
    page.get_by_role("button", name="Add backup job").click()
    expect(page.get_by_role("heading", name="e2e nightly")).to_be_visible()
    expect(page.locator("dl.facts", has_text="Selected now")).to_contain_text(f"{len(VMS)} VMs")


def run_now(page) -> int:
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name=re.compile(r"e2e nightly run #\d+"))).to_be_visible()
    return int(re.search(r"/jobs/runs/(\d+)/", page.url).group(1))


def test_back_up_cancel_and_restore_while_a_viewer_watches(page, viewer_page, live_system, lab_root):
    assert live_system.configuration in ("embedded", "scale-out")
    shot = f"jobs-flow-{live_system.configuration}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page)
    add_repository_and_job(page, str(live_system.var_dir / "e2e-repository"))
    job_url = page.url

    # First run: the page follows it over its websocket to the end, without a reload.
    frames = collect_frames(page)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    first_run = run_now(page)
    navigations.clear()
    page.evaluate("window.__stayed = true")
    largest = page.get_by_role("progressbar", name=f"Progress of {LARGEST}")
    expect(largest).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"), timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot}-progress.png"), full_page=True)
    expect(page.locator("#run-state [data-state]")).to_have_attribute("data-state", "succeeded", timeout=60_000)
    assert page.evaluate("window.__stayed === true") and navigations == []
    for name in VMS:
        expect(page.get_by_role("progressbar", name=f"Progress of {name}")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#run-log")).to_contain_text(LARGEST)
    ended = next(i for i, f in enumerate(frames) if f.get("event") == "run.state"
                 and f["data"]["id"] == first_run and f["data"]["state"] == "succeeded")
    midway = sorted({p for p in percents(frames[:ended]) if 0 < p < 100})
    assert len(midway) >= 3, f"too few intermediate percents over the websocket: {midway}"

    # The restore point of the largest VM, on its page.
    page.goto("/inventory/vms/?q=" + LARGEST)
    page.locator("#vm-table").get_by_role("link", name=LARGEST, exact=True).click()
    points = page.locator("#restore-points tbody tr")
    expect(points).to_have_count(1)
    restore_url = points.get_by_role("link", name="Restore", exact=True).get_attribute("href")
    vm_url = page.url

    # Second run: a viewer watches it and cannot act; the administrator cancels it.
    log_in(viewer_page, VIEWER, VIEWER_PASSWORD)
    page.goto(job_url)
    second_run = run_now(page)
    run_url = f"/jobs/runs/{second_run}/"
    expect(page.get_by_role("progressbar", name=f"Progress of {LARGEST}")).to_be_visible(timeout=30_000)

    viewer_frames = collect_frames(viewer_page)
    viewer_page.goto(run_url)
    expect(viewer_page.locator("#run-state [data-state]")).to_have_attribute("data-state", "running")
    viewer_page.on("pageerror", lambda error: errors.append(str(error)))
    expect(viewer_page.get_by_role("progressbar", name=f"Progress of {LARGEST}")).to_have_attribute(
        "aria-valuenow", re.compile(r"^[1-9][0-9]?$"))  # moves live for a viewer too
    expect(viewer_page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
    attempt = viewer_page.evaluate(CANCEL_OVER_SOCKET, f"/ws/jobs/runs/{second_run}/")
    assert attempt["opened"] and attempt["reply"]["event"] == "error", attempt  # watching yes, acting no
    assert "Only" in attempt["reply"]["data"]["message"]
    csrf = next(c["value"] for c in viewer_page.context.cookies() if c["name"] == "csrftoken")
    job_id = re.search(r"/jobs/(\d+)/", job_url).group(1)
    for url in (f"{run_url}cancel/", f"/jobs/{job_id}/run/", restore_url):
        response = viewer_page.request.post(url, headers={"X-CSRFToken": csrf}, form={"step": "1", "what": "vm"},
                                            max_redirects=0)
        assert response.status == 403 and REFUSED in response.text(), (url, response.status)
    viewer_page.screenshot(path=str(ARTIFACTS / f"{shot}-viewer.png"), full_page=True)
    expect(viewer_page.locator("#run-state [data-state]")).to_have_attribute("data-state", "running")
    assert any(f.get("event") == "task.state" for f in viewer_frames)
    assert not any(f["data"].get("cancel_requested") for f in viewer_frames if f.get("event") == "run.state")

    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-state [data-state]")).to_have_attribute("data-state", "cancelled", timeout=30_000)
    expect(viewer_page.locator("#run-state [data-state]")).to_have_attribute("data-state", "cancelled")
    page.reload()
    rows = page.locator("#task-table tbody tr")
    expect(rows).to_have_count(len(VMS))
    states = [rows.nth(i).get_attribute("data-state") for i in range(len(VMS))]
    assert not set(states) & set(ACTIVE_TASK_STATES) and "cancelled" in states, states
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    lab = LabConnector(root=lab_root)
    assert all(lab.list_snapshots(lab.find_vm(name)) == [] for name in VMS)  # the cancelled backups released theirs

    viewer_page.goto(job_url)
    expect(viewer_page.get_by_role("heading", name="e2e nightly")).to_be_visible()
    expect(viewer_page.get_by_role("button", name="Run now")).to_have_count(0)
    viewer_page.goto(vm_url)
    expect(viewer_page.locator("#restore-points tbody tr")).to_have_count(1)
    expect(viewer_page.locator("#restore-points").get_by_role("link", name="Restore", exact=True)).to_have_count(0)

    # Restore the largest VM as a new VM through the wizard.
    page.goto(vm_url)
    page.locator("#restore-points").get_by_role("link", name="Restore", exact=True).click()
    expect(page.get_by_role("heading", name="1. What to restore")).to_be_visible()
    page.get_by_role("radio", name="The whole VM").check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("heading", name="2. Where to restore it")).to_be_visible()
    page.get_by_role("radio", name="As a new VM").check()
    new_name = f"{LARGEST}-restored"
    expect(page.get_by_label("New VM name")).to_have_value(new_name)
    datastore = page.get_by_label("Datastore")
    expect(datastore.locator("option", has_text="local-esx")).to_have_count(1)  # the host's own disk
    shared = datastore.locator("option", has_text="shared-vmfs-01")  # the appliance's host mounts it too
    datastore.select_option(shared.get_attribute("value"))
    network = page.get_by_label("Network")
    network.select_option(label="dvPG-Production")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-wizard.png"), full_page=True)
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("heading", name="3. Check and start")).to_be_visible()
    expect(page.locator("#restore-wizard dl.facts")).to_contain_text(new_name)
    page.get_by_role("button", name="Start restore").click()
    expect(page.get_by_role("heading", name=re.compile(f"of {LARGEST}"))).to_be_visible()
    expect(page.locator("#task-state [data-state]")).to_have_attribute("data-state", "succeeded", timeout=60_000)

    source, restored = lab.find_vm(LARGEST), lab.find_vm(new_name)
    source_disks = sorted(d["key"] for d in lab.vm_disks(source))
    restored_disks = sorted(d["key"] for d in lab.vm_disks(restored))
    assert len(restored_disks) == len(source_disks) == 2
    assert [lab.disk_digest(restored, key) for key in restored_disks] == [
        lab.disk_digest(source, key) for key in source_disks]
    assert errors == []
