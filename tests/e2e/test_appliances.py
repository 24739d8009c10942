"""An administrator configures an appliance for the lab: the form narrows its selects as the connection and
host are chosen, the draft is saved and shows on the fleet list and its own page; a bulk deployment shows
its progress live, also when the page's socket drops on the way."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import log_in

pytestmark = pytest.mark.browser

ROOT_PASSWORD = "Root-Pass-9182!x"
USER_PASSWORD = "User-Pass-7731!y"


@pytest.fixture(scope="module")
def synced_lab(live_system):
    root = live_system.var_dir / "e2e-appliance-lab"
    live_system.manage("lab", "seed", "--root", str(root), "--vms", "8", "--disk-size", "1M")  # adds and syncs "Lab"
    return root


def test_create_an_appliance_draft_for_the_lab(page, synced_lab):
    log_in(page)
    page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Appliances").click()
    expect(page.get_by_role("heading", name="Appliances")).to_be_visible()
    page.get_by_role("link", name="New appliance").first.click()

    page.get_by_role("textbox", name="Name", exact=True).fill("va-e2e")
    host = page.get_by_role("combobox", name="Host", exact=True)
    expect(host.locator("option")).to_have_count(1)  # nothing to choose before the connection
    page.get_by_role("combobox", name="Connection").select_option(label="Lab")
    expect(host.locator("option", has_text="esx-01.lab.local")).to_have_count(1)  # htmx brought the hosts
    host.select_option(label="esx-01.lab.local")
    datastore = page.get_by_role("combobox", name="Datastore")
    expect(datastore.locator("option", has_text="local-esx-01")).to_have_count(1)
    expect(datastore.locator("option", has_text="local-esx-02")).to_have_count(0)  # another host's disk
    datastore.select_option(datastore.locator("option", has_text="local-esx-01").get_attribute("value"))
    network = page.get_by_role("combobox", name="Network")
    network.select_option(network.locator("option", has_text="dvPG-Production").get_attribute("value"))
    expect(page.get_by_role("listbox", name="Served hosts").locator("option:checked")).to_have_text("esx-01.lab.local")

    page.get_by_role("combobox", name="Addressing").select_option("dhcp")
    expect(page.get_by_role("textbox", name="Gateway")).to_be_hidden()  # static settings only for static addressing
    page.get_by_role("textbox", name="Host name").fill("va-e2e")
    page.get_by_label("Root password", exact=True).fill(ROOT_PASSWORD)
    page.get_by_label("Root password (again)").fill(ROOT_PASSWORD)
    page.get_by_label("Password of the non-root user", exact=True).fill(USER_PASSWORD)
    page.get_by_label("Password of the non-root user (again)").fill(USER_PASSWORD)
    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.get_by_role("heading", name=re.compile("va-e2e"))).to_be_visible()
    expect(page.locator("[id^=appliance-state-]")).to_have_text("Not deployed")
    expect(page.locator("#configuration")).to_contain_text("local-esx-01")
    expect(page.locator("#configuration")).not_to_contain_text(ROOT_PASSWORD)

    page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Appliances").click()
    row = page.locator("#appliance-table tbody tr", has_text="va-e2e")
    expect(row).to_contain_text("esx-01.lab.local")
    expect(row).to_contain_text("Not deployed")
    row.get_by_role("link", name="va-e2e").click()
    expect(page.get_by_role("heading", name=re.compile("va-e2e"))).to_be_visible()
    expect(page.locator("#served-hosts")).to_contain_text("esx-01.lab.local")


@pytest.fixture
def lab_vas_removed(live_system):
    """Lab VAs the live system deployed outlive it (they belong to the fleet): destroy them after the test."""
    yield
    from appliances.labhost import LabHost

    for state in (live_system.var_dir / "lab-appliances").glob("*/state.json"):
        LabHost(state.parent).destroy()


def drop_the_first_fleet_socket(page) -> list[str]:
    """The first fleet socket is dropped after its first message (as a restarting server or a lost Redis
    connection would); later ones pass through. Returns a log of what happened, for the assertions."""
    seen: list[str] = []

    def route(ws) -> None:
        server = ws.connect_to_server()
        if seen:
            seen.append("reconnected")
            return  # passes messages both ways untouched

        def first_message(message) -> None:
            ws.send(message)
            if "dropped" not in seen:
                seen.append("dropped")
                ws.close(code=1011, reason="server error")
                server.close()

        seen.append("opened")
        server.on_message(first_message)

    page.route_web_socket(re.compile(r"/ws/appliances/$"), route)
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="BROWSER DEPLOYMENT TEST SKIPPED: lab appliances need root "
                                               "(network namespaces with their own sshd).")
def test_bulk_deploy_shows_live_progress_then_remove(page, synced_lab, lab_vas_removed):
    dropped = drop_the_first_fleet_socket(page)
    log_in(page)
    page.goto("/appliances/bulk/")
    page.get_by_role("combobox", name="Connection").select_option(label="Lab")
    hosts = page.get_by_role("listbox", name="Hosts")
    expect(hosts.locator("option", has_text="esx-03.lab.local")).to_have_count(1)
    with page.expect_response(re.compile("/appliances/bulk/placement")):
        hosts.select_option(label=["esx-03.lab.local", "esx-04.lab.local"])  # htmx narrows the choices
    page.wait_for_load_state("networkidle")
    network = page.get_by_role("combobox", name="Network")
    expect(network.locator("option", has_text="dvPG-Production")).to_have_count(1)
    network.select_option("dvPG-Production")
    page.get_by_role("textbox", name="Base name").fill("edge")
    page.get_by_label("Root password", exact=True).fill(ROOT_PASSWORD)
    page.get_by_label("Root password (again)").fill(ROOT_PASSWORD)
    page.get_by_label("Password of the non-root user", exact=True).fill(USER_PASSWORD)
    page.get_by_label("Password of the non-root user (again)").fill(USER_PASSWORD)
    page.get_by_role("button", name="Create and deploy").click()

    # The operation page: rows move through their phases over the websocket, without a reload.
    expect(page.get_by_role("heading", name=re.compile("Deploy #"))).to_be_visible()
    page.evaluate("window.__stayed = true")
    rows = page.locator("#item-table tbody tr")
    expect(rows).to_have_count(2)
    for row in (rows.nth(0), rows.nth(1)):
        expect(row.locator("[data-field=state]")).to_have_text("Succeeded", timeout=90_000)
        expect(row.locator("[data-field=message]")).to_contain_text("engine")
        expect(row.locator("[data-field=percent]")).to_have_text("100%")
    assert page.evaluate("window.__stayed === true")  # updated live, not by reloading
    assert dropped[:3] == ["opened", "dropped", "reconnected"]  # ...across a dropped socket

    page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Appliances").click()
    row = page.locator("#appliance-table tbody tr", has_text="edge-esx-03")
    expect(row).to_contain_text("Ready")
    row.get_by_role("link", name=re.compile("edge-esx-03")).click()
    expect(page.locator("#served-hosts")).to_contain_text("esx-03.lab.local")
    page.get_by_role("link", name="Remove").click()
    page.get_by_role("button", name=re.compile("Remove edge-esx-03")).click()
    expect(page.locator("#item-table tbody tr").first.locator("[data-field=state]")).to_have_text(
        "Succeeded", timeout=60_000)
    page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Appliances").click()
    expect(page.locator("#appliance-table tbody tr", has_text="edge-esx-03")).to_have_count(0)
    expect(page.locator("#appliance-table tbody tr", has_text="edge-esx-04")).to_contain_text("Ready")
