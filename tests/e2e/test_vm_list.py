"""Searching, filtering, sorting and paging the VM list in a browser, on the seeded demo lab."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import log_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab(live_system):
    """The demo lab as the first start sets it up: seeded, with its "Lab" connection synced."""
    root = live_system.var_dir / "demo-lab"
    live_system.manage("lab", "seed", "--root", str(root), "--vms", "32", "--disk-size", "1M")
    return root


def test_vm_list_filters_sort_and_back_button(page, lab):
    log_in(page)
    page.goto("/inventory/vms/")
    rows = page.locator("#vm-table tbody tr")
    page.get_by_label("Power state").select_option("poweredOff")
    expect(page).to_have_url(re.compile(r"power_state=poweredOff"))
    off_count = 5  # the seeded lab powers off every seventh VM, from the fourth
    expect(rows).to_have_count(off_count)
    for badge in rows.locator("td:nth-child(2) .badge").all():
        expect(badge).to_have_text("Powered off")

    page.get_by_role("link", name=re.compile("^Name")).click()
    expect(page).to_have_url(re.compile(r"sort=-name"))
    expect(page).to_have_url(re.compile(r"power_state=poweredOff"))  # sorting keeps the filter
    expect(rows).to_have_count(off_count)

    page.get_by_role("searchbox").fill("vdi")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("vdi-01")
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"q=vdi"))
    expect(rows).to_have_count(off_count)


def test_vm_with_odd_characters_is_found_and_shown(page, lab):
    log_in(page)
    page.goto("/inventory/vms/?q=" + "finance reports (été) #1".replace(" ", "+").replace("#", "%23"))
    rows = page.locator("#vm-table tbody tr")
    expect(rows).to_have_count(1)
    expect(page.get_by_role("searchbox")).to_have_value("finance reports (été) #1")
    page.get_by_role("link", name="finance reports (été) #1").click()
    expect(page.get_by_role("heading", name=re.compile(r"finance reports \(été\) #1"))).to_be_visible()


def test_vm_list_pages(page, lab):
    log_in(page)
    page.goto("/inventory/vms/")
    rows = page.locator("#vm-table tbody tr")
    page.get_by_label("Per page").select_option("25")
    expect(rows).to_have_count(25)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    page.get_by_role("link", name="Next").click()
    expect(rows).to_have_count(7)
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page).to_have_url(re.compile(r"per_page=25"))
    page.reload()  # the address alone reproduces the page
    expect(rows).to_have_count(7)


def test_connection_page_follows_a_sync_started_elsewhere(page, lab, live_system):
    log_in(page)
    page.goto("/inventory/connections/")
    badge = page.locator("[id^=connection-status-]")
    expect(badge).to_have_attribute("data-status", "ok")
    page.wait_for_timeout(1000)  # the websocket is open
    with page.expect_event("load", timeout=30_000):  # the finished sync reloads the page by itself
        live_system.manage("lab", "seed", "--root", str(lab), "--vms", "32", "--disk-size", "1M")
    expect(badge).to_have_attribute("data-status", "ok")
