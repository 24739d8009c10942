"""Adding a (simulated) vCenter in the browser: first test shows the certificate, trusting it pins
the thumbprint, a sync brings in its hosts and VMs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.vcsim]


@pytest.fixture(scope="module")
def vcenter():
    from tests.harness import vcsim

    try:
        # 127.0.0.2: pyvmomi skips certificate checks for 127.0.0.1, so pinning is only real elsewhere
        simulator = vcsim.start(vcsim.Shape(listen="127.0.0.2"))
    except vcsim.SimulatorUnavailable as exc:
        pytest.skip(str(exc))
    yield simulator
    simulator.stop()


def test_add_vcenter_trust_its_certificate_and_sync(page, vcenter):
    log_in(page)
    page.goto("/inventory/connections/add/")
    page.get_by_role("textbox", name="Name", exact=True).fill("vCenter sim")
    page.get_by_label("Type").select_option("vsphere")
    page.get_by_label("Address").fill(vcenter.host)
    page.get_by_label("Port").fill(str(vcenter.port))
    page.get_by_label("User name").fill(vcenter.user)
    page.get_by_label("Password").fill(vcenter.password)
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", name=re.compile("vCenter sim"))).to_be_visible()
    expect(page.locator("body")).not_to_contain_text(vcenter.password)

    page.get_by_role("button", name="Test").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("First connection")
    expect(result.locator("[data-thumbprint]")).to_have_text(vcenter.thumbprint)
    result.get_by_role("button", name="Trust this certificate").click()
    expect(result).to_contain_text("Connected to")

    page.get_by_role("button", name="Sync now").click()
    badge = page.locator("[id^=connection-status-]")
    expect(badge).to_have_attribute("data-status", "ok", timeout=60_000)
    expect(page.locator("dl.facts").first).to_contain_text(vcenter.thumbprint)  # pinned
    expect(page.locator(".stat", has_text="Hosts")).to_contain_text(str(vcenter.hosts))
    expect(page.locator(".stat", has_text="VMs")).to_contain_text(str(vcenter.vms))

    page.locator(".stat", has_text="VMs").get_by_role("link").click()
    expect(page.get_by_text(f"{vcenter.vms} VMs")).to_be_visible()
    first = page.locator("#vm-table tbody tr").first.get_by_role("link").first
    name = first.inner_text()
    first.click()
    expect(page.get_by_role("heading", name=re.compile(re.escape(name)))).to_be_visible()
    expect(page.locator("#disk-table tbody tr").first).to_contain_text(".vmdk")


def test_test_and_trust_on_the_form_before_saving(page, vcenter):
    log_in(page)
    page.goto("/inventory/connections/add/")
    page.get_by_role("textbox", name="Name", exact=True).fill("vCenter sim pinned first")
    page.get_by_label("Address").fill(vcenter.host)
    page.get_by_label("Port").fill(str(vcenter.port))
    page.get_by_label("User name").fill(vcenter.user)
    page.get_by_label("Password").fill(vcenter.password)
    page.get_by_role("button", name="Test before saving").click()
    result = page.locator("#test-result")
    expect(result.locator("[data-thumbprint]")).to_have_text(vcenter.thumbprint)
    result.get_by_role("button", name="Trust this certificate").click()
    expect(page.get_by_label("Pinned certificate thumbprint (SHA-256)")).to_have_value(vcenter.thumbprint)
    page.get_by_role("button", name="Test before saving").click()
    expect(result).to_contain_text("Connected to")
    expect(page.get_by_label("Password")).to_have_value(vcenter.password)  # the typed password stays in the form
    page.get_by_role("button", name="Add connection").click()

    expect(page.get_by_role("heading", name=re.compile("vCenter sim pinned first"))).to_be_visible()
    expect(page.locator("dl.facts").first).to_contain_text(vcenter.thumbprint)
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#test-result")).to_contain_text("Connected to")
