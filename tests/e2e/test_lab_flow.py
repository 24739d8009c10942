"""A newcomer's path through the portal on the lab: log in, add a connection, sync, find a VM."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import log_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab_root(live_system):
    root = live_system.var_dir / "e2e-lab"
    live_system.manage("lab", "seed", "--root", str(root), "--vms", "32", "--disk-size", "1M", "--no-sync")
    return root


def test_add_lab_connection_sync_and_find_a_vm(page, lab_root):
    log_in(page)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.get_by_role("link", name="Connections").click()
    page.get_by_role("link", name="Add connection").first.click()
    page.get_by_role("textbox", name="Name", exact=True).fill("Lab E2E")
    page.get_by_label("Type").select_option("lab")
    expect(page.get_by_label("Address")).to_be_hidden()  # vSphere-only fields go away for the lab
    page.get_by_label("Lab folder").fill(str(lab_root))
    page.get_by_role("button", name="Add connection").click()

    expect(page.get_by_role("heading", name=re.compile("Lab E2E"))).to_be_visible()
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#test-result")).to_contain_text("Connected to")

    page.get_by_role("button", name="Sync now").click()
    badge = page.locator("[id^=connection-status-]")
    expect(badge).to_have_attribute("data-status", "ok", timeout=60_000)  # polling swaps it, then the page reloads
    expect(page.locator(".stat", has_text="Hosts")).to_contain_text("4")

    page.get_by_role("link", name="Hosts").first.click()
    expect(page.locator("table tbody tr")).to_have_count(4)
    expect(page.get_by_role("link", name="esx-01.lab.local")).to_be_visible()

    page.get_by_role("link", name="Virtual machines").click()
    expect(page.get_by_text("32 VMs")).to_be_visible()
    page.get_by_role("searchbox").fill("erp-02")
    expect(page.locator("#vm-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"[?&]q=erp-02"))  # the address keeps the search

    page.get_by_role("link", name="erp-02").click()
    expect(page.get_by_role("heading", name=re.compile("erp-02"))).to_be_visible()
    expect(page.locator("#disk-table tbody tr")).to_have_count(2)
    expect(page.locator("#disk-table")).to_contain_text(".vmdk")

