"""The portal on a laptop screen (1366x768) and by keyboard alone: no page scrolls sideways, and an operator
logs in, finds a backup job, runs it, watches its progress and walks the restore wizard with Tab, Shift+Tab,
Enter, Space and the arrow keys, every focused element visible with a focus ring."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, log_in
from tests.e2e.live import PASSWORD, USERNAME

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 768}
VMS = ("web-01", "db-01")  # the lab's first two VMs; db-01 has two disks, the longer backup
WATCHED = "db-01"
JOB = "laptop nightly"
NEW_VM = f"{WATCHED}-restored"

# The focused element as a keyboard user meets it: its role, accessible name (roughly), place and focus ring.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const tag = el.tagName.toLowerCase(), type = (el.getAttribute("type") || "").toLowerCase();
  const implicit = tag === "a" && el.hasAttribute("href") ? "link"
    : tag === "button" ? "button" : tag === "select" ? "combobox" : tag === "textarea" ? "textbox"
    : tag === "input" ? ({checkbox: "checkbox", radio: "radio", search: "searchbox", submit: "button",
                           number: "spinbutton"}[type] || "textbox")
    : tag === "main" ? "main" : /^h[1-6]$/.test(tag) ? "heading" : tag;
  const labelled = el.labels && el.labels.length ? el.labels[0].textContent : "";
  const name = (el.getAttribute("aria-label") || labelled || el.textContent || el.value || "")
    .replace(/\\s+/g, " ").replace(/\\*$/, "").trim();
  const box = el.getBoundingClientRect(), style = getComputedStyle(el);
  return {
    role: el.getAttribute("role") || implicit, name: name, id: el.id,
    visible: box.width > 0 && box.height > 0 && box.bottom > 0 && box.right > 0
      && box.top < window.innerHeight && box.left < window.innerWidth && style.visibility !== "hidden",
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
    shadow: style.boxShadow !== "none",
  };
}"""


def focused(page) -> dict | None:
    return page.evaluate(FOCUSED)


def settled(page) -> dict:
    """The focused element once the browser has scrolled it into view (a loaded machine may lag a frame)."""
    try:
        page.wait_for_function(f"() => ({FOCUSED})().visible", timeout=5_000)
    except PlaywrightTimeoutError:
        pass
    return focused(page)


def tab_to(page, role: str, name: str | re.Pattern, limit: int = 80, backwards: bool = False) -> dict:
    """Presses Tab (Shift+Tab backwards) until the focused element has this role and name; fails with the list
    of elements passed on the way. Every one of them must be on screen when focused."""
    matches: Callable[[str], bool] = (name.search if isinstance(name, re.Pattern) else lambda text: text == name)
    visited: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        element = focused(page)
        if element is None:
            visited.append("(body)")
            continue
        visited.append(f"{element['role']} {element['name'][:40]!r}")
        if not element["visible"]:
            element = settled(page)
        assert element["visible"], f"focused {visited[-1]} is off screen after {visited}"
        if element["role"] == role and matches(element["name"]):
            return element
    raise AssertionError(f"no {role} named {name!r} within {limit} presses of Tab; passed: {visited}")


def assert_focus_ring(element: dict) -> None:
    assert element["outline"] or element["shadow"], f"no visible focus ring on the focused {element}"


def assert_no_sideways_scroll(page, what: str) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    if widths[0] > widths[1]:
        wide = page.evaluate("""() => [...document.querySelectorAll('main *, header *, nav *')]
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
          .slice(0, 5).map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
            + '.' + [...el.classList].join('.') + ' ' + Math.round(el.getBoundingClientRect().right))""")
        pytest.fail(f"{what} scrolls sideways on a {LAPTOP['width']} px screen: {widths}; widest: {wide}")


@pytest.fixture(scope="module")
def job(live_system):
    """The lab with the built-in local appliance, a local repository and a job of two VMs read at 1 MB/s."""
    live_system.manage("lab", "seed", "--root", str(live_system.var_dir / "keyboard-lab"), "--vms", "3",
                       "--disk-size", "6M", "--fill", "1")  # adds and syncs "Lab"; db-01 reads 12 MB: about 12 s
    live_system.manage("fleet", "local", "--connection", "Lab")
    folder = live_system.var_dir / "keyboard-repository"
    output = live_system.manage("shell", "-c", (
        "from inventory.models import VirtualMachine; from jobs.models import BackupJob, Repository; "
        f"repository = Repository.objects.create(name='laptop repo', kind='local', path={str(folder)!r}, "
        "passphrase='Repo-Passphrase-1'); "
        f"job = BackupJob.objects.create(name={JOB!r}, repository=repository, max_parallel=2, throttle_mbps=1, "
        "use_cbt=False); "
        f"job.vms.set(VirtualMachine.objects.filter(name__in={list(VMS)!r})); "
        "print(job.pk, job.vms.count())"))
    pk, vm_count = map(int, output.splitlines()[-1].split())  # after the shell's import note
    assert vm_count == len(VMS)
    return pk


@pytest.fixture
def laptop(browser, live_system):
    # Reduced motion, as many keyboard users set it: Bootstrap then scrolls at once instead of smoothly,
    # and a smooth scroll on a loaded machine could outlast the wait for the focused element.
    context = browser.new_context(base_url=live_system.url, viewport=LAPTOP, reduced_motion="reduce")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def screenshot(page, live_system, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"keyboard-{live_system.configuration}-{name}.png"), full_page=True)


def test_every_page_fits_a_laptop_screen(laptop, live_system, job):
    page = laptop
    log_in(page)

    def check(name: str, url: str | None = None) -> None:
        if url:
            page.goto(url)
        assert_no_sideways_scroll(page, name)
        screenshot(page, live_system, name)

    check("dashboard", "/")
    check("vm-list", "/inventory/vms/")
    check("job-list", "/jobs/")
    check("job-form", "/jobs/add/")
    check("notifications", "/jobs/notifications/")
    check("appliances", "/appliances/")
    check("job-detail", f"/jobs/{job}/")

    page.get_by_role("button", name="Run now").click()
    watched = page.get_by_role("progressbar", name=f"Progress of {WATCHED}")
    expect(watched).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"), timeout=30_000)
    check("run-running")
    expect(page.locator("#run-state [data-state]")).to_have_attribute("data-state", "succeeded", timeout=60_000)
    check("run-finished")
    check("history", "/jobs/history/")

    check("restore-points", "/jobs/restore-points/")
    page.locator("#results").get_by_role("link", name="Restore", exact=True).first.click()
    expect(page.get_by_role("heading", name="1. What to restore")).to_be_visible()
    check("restore-step-1")
    page.get_by_role("radio", name="The whole VM").check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("heading", name="2. Where to restore it")).to_be_visible()
    page.get_by_role("radio", name="As a new VM").check()
    check("restore-step-2")
    datastore = page.get_by_label("Datastore")
    datastore.select_option(datastore.locator("option", has_text="shared-vmfs-01").get_attribute("value"))
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("heading", name="3. Check and start")).to_be_visible()
    check("restore-step-3")


def test_keyboard_only_backup_and_restore_wizard(laptop, live_system, job):
    page = laptop
    keys = page.keyboard

    # Log in: the user name field has the focus when the page opens.
    page.goto("/login/")
    assert focused(page)["name"] == "User name"
    keys.type(USERNAME)
    tab_to(page, "textbox", "Password")
    keys.type(PASSWORD)
    keys.press("Enter")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()

    # The first Tab reaches "Skip to content", whose Enter puts the focus on the page's content.
    keys.press("Tab")
    skip = focused(page)
    assert (skip["role"], skip["name"]) == ("link", "Skip to content") and skip["visible"], skip
    assert_focus_ring(skip)
    keys.press("Enter")
    expect(page.locator("#main")).to_be_focused()

    # Back up through the header into the main navigation, to "Backup jobs".
    jobs_link = tab_to(page, "link", "Backup jobs", backwards=True)
    assert_focus_ring(jobs_link)
    keys.press("Enter")
    expect(page.get_by_role("heading", name="Backup jobs", exact=True)).to_be_visible()

    # Forward through the whole navigation and the list's filters to the job.
    assert tab_to(page, "link", "Skip to content")["visible"]
    tab_to(page, "link", "Backup jobs")
    assert_focus_ring(tab_to(page, "link", JOB))
    keys.press("Enter")
    expect(page.get_by_role("heading", name=JOB)).to_be_visible()

    # Run it, and follow its progress on the run page without a reload.
    run_now = tab_to(page, "button", "Run now")
    assert_focus_ring(run_now)
    keys.press("Enter")
    expect(page.get_by_role("heading", name=re.compile(rf"{JOB} run #\d+"))).to_be_visible()
    keys.press("Tab")
    keys.press("Enter")  # skip to content
    assert_focus_ring(tab_to(page, "button", "Cancel run", limit=3))
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("window.__stayed = true")
    watched = page.get_by_role("progressbar", name=f"Progress of {WATCHED}")
    expect(watched).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"), timeout=30_000)
    first = int(watched.get_attribute("aria-valuenow"))
    assert_no_sideways_scroll(page, "the run page while it runs")
    screenshot(page, live_system, "walk-run")
    expect(watched).not_to_have_attribute("aria-valuenow", str(first), timeout=30_000)
    expect(page.locator("#run-state [data-state]")).to_have_attribute("data-state", "succeeded", timeout=60_000)
    expect(watched).to_have_attribute("aria-valuenow", "100")
    assert page.evaluate("window.__stayed === true") and navigations == []
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    assert (focused(page) or {}).get("name") == "Reload"  # the ended run's Cancel handed its focus on

    # From the VM's page, its restore point, into the restore wizard.
    tab_to(page, "link", "Virtual machines", backwards=True)
    keys.press("Enter")
    expect(page.get_by_role("heading", name="Virtual machines", exact=True)).to_be_visible()
    tab_to(page, "link", WATCHED)
    keys.press("Enter")
    expect(page.get_by_role("heading", name=re.compile(WATCHED))).to_be_visible()
    assert_focus_ring(tab_to(page, "link", "Restore"))
    keys.press("Enter")

    # Step 1: the heading has the focus; the radios take arrows, Next takes Enter.
    expect(page.get_by_role("heading", name="1. What to restore")).to_be_visible()
    expect(page.locator("#wizard-step")).to_be_focused()
    whole_vm = page.get_by_role("radio", name="The whole VM")
    radio = tab_to(page, "radio", re.compile("."))
    assert_focus_ring(radio)
    keys.press("ArrowDown")
    expect(page.get_by_role("radio", name=re.compile("^One disk"))).to_be_checked()
    keys.press("ArrowUp")
    expect(whole_vm).to_be_checked()
    screenshot(page, live_system, "walk-restore-step-1")
    assert_focus_ring(tab_to(page, "button", "Next"))
    keys.press("Enter")

    # Step 2: as a new VM, on the datastore the appliance's host mounts too, chosen with arrows.
    expect(page.get_by_role("heading", name="2. Where to restore it")).to_be_visible()
    expect(page.locator("#wizard-step")).to_be_focused()  # the swapped step's heading, not the top of the page
    tab_to(page, "radio", re.compile("."))
    if focused(page)["name"] != "As a new VM":
        keys.press("ArrowUp")
    expect(page.get_by_role("radio", name="As a new VM")).to_be_checked()
    tab_to(page, "textbox", "New VM name")
    expect(page.get_by_label("New VM name")).to_have_value(NEW_VM)
    datastore = page.get_by_label("Datastore")
    assert_focus_ring(tab_to(page, "combobox", "Datastore"))
    for _ in range(10):
        if "shared-vmfs-01" in datastore.evaluate("(select) => select.selectedOptions[0].textContent"):
            break
        keys.press("ArrowDown")
    expect(datastore.locator("option:checked")).to_contain_text("shared-vmfs-01")
    assert_no_sideways_scroll(page, "the restore wizard's second step")
    screenshot(page, live_system, "walk-restore-step-2")
    tab_to(page, "button", "Back")  # the buttons take the Tab order they are seen in
    keys.press("Tab")
    assert (focused(page)["role"], focused(page)["name"]) == ("button", "Next")
    keys.press("Enter")

    # Step 3: the summary; the focus is on its heading and Start restore is the next stop after the facts.
    expect(page.get_by_role("heading", name="3. Check and start")).to_be_visible()
    expect(page.locator("#restore-wizard dl.facts")).to_contain_text(NEW_VM)
    expect(page.locator("#wizard-step")).to_be_focused()
    assert_focus_ring(tab_to(page, "button", "Start restore"))
    screenshot(page, live_system, "walk-restore-step-3")


def test_vm_picker_by_keyboard(laptop, live_system, job):
    page = laptop
    keys = page.keyboard
    log_in(page)
    page.goto("/jobs/add/")
    matches = page.locator("#vm-matches")
    chosen = page.locator("#vm-chosen [data-vm]")

    # A connection chosen with an arrow key narrows the matches; Space ticks a match into a chip.
    tab_to(page, "combobox", "Connection")
    with page.expect_response(re.compile("/jobs/vm-choices/")):
        keys.press("ArrowDown")
    expect(page.get_by_label("Connection").locator("option:checked")).to_have_text("Lab")
    for name in VMS:
        assert_focus_ring(tab_to(page, "checkbox", name))
        keys.press("Space")
        expect(matches.get_by_label(name, exact=True)).to_be_checked()
    expect(chosen).to_have_count(len(VMS))

    # A chip's remove button is reached with Shift+Tab; Enter removes it and the focus stays in the picker.
    remove = tab_to(page, "button", f"Remove {VMS[0]}", backwards=True)
    assert_focus_ring(remove)
    keys.press("Enter")
    expect(chosen).to_have_count(len(VMS) - 1)
    expect(matches.get_by_label(VMS[0], exact=True)).not_to_be_checked()
    assert (focused(page) or {}).get("name") == f"Remove {VMS[1]}"

    # "Select all" by Enter adds every match of the connection.
    tab_to(page, "button", re.compile("^Select all"))
    keys.press("Enter")
    boxes = matches.get_by_role("checkbox")
    expect(chosen).to_have_count(boxes.count())
    expect(boxes.and_(page.locator(":not(:checked)"))).to_have_count(0)
    assert_no_sideways_scroll(page, "the job form with chosen VMs")
    screenshot(page, live_system, "walk-vm-picker")
