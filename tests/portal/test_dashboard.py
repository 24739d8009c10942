"""The operators' dashboard: protection (with the VM list's protection filter), the last 24 hours of runs,
running jobs with their progress, repository usage and appliance health; every number links to its list.
Also the run list across jobs (state, period and job filters), and what a viewer sees."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from appliances.models import Appliance
from inventory.models import VirtualMachine
from jobs import protection
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task
from jobs.selection import vms_of
from tests.portal.conftest import build_lab

GIB = 1024**3


@pytest.fixture
def repo(db) -> Repository:
    return Repository.objects.create(name="nas", kind="local", path="/srv/repo", passphrase="Repo-Passphrase-5150",
                                     free_bytes=300 * GIB, last_test=timezone.now(), last_test_ok=True)


def page(client, url: str, **kwargs) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, response.content[:500]
    return html.unescape(response.content.decode())


def point(repo, vm, hours_ago: float, stored: int = GIB, rp_id: str = "") -> RestorePoint:
    return RestorePoint.objects.create(repository=repo, rp_id=rp_id or f"rp-{vm.pk}-{hours_ago}", vm=vm,
                                       vm_name=vm.name, taken=timezone.now() - timedelta(hours=hours_ago),
                                       stored_bytes=stored, logical_bytes=4 * stored)


def appliance(lab, name: str, state: str, **fields) -> Appliance:
    return Appliance.objects.create(name=name, hostname=name, connection=lab.connection, host=lab.hosts[0],
                                    datastore=lab.locals[0], network=lab.networks[0], root_password="Root-Pass-77",
                                    user_password="User-Pass-77", state=state, **fields)


def run(job, state: str, hours_ago: float = 1, **fields) -> JobRun:
    created = timezone.now() - timedelta(hours=hours_ago)
    made = JobRun.objects.create(job=job, job_name=job.name, state=state, **fields)
    JobRun.objects.filter(pk=made.pk).update(created=created)  # created is set on insert
    made.refresh_from_db()
    return made


def vm_names(html_text: str) -> set[str]:
    table = re.search(r'<table[^>]*id="vm-table".*?</table>', html_text, re.S)
    return set(re.findall(r">(vm-\d{4})<", table.group(0))) if table else set()


@pytest.fixture
def protected_lab(lab, repo):
    """30 VMs: 0-2 backed up recently, 3 too long ago; a job holds 0-4 plus folder "test" (0, 5, 10, ...);
    27 is an appliance's own VM, 28 vanished, 29 a template (with a recent point: still not counted)."""
    vms = lab.vms
    job = BackupJob.objects.create(name="nightly", repository=repo, rules={"folders": ["/test/"]})
    job.vms.set(vms[:5])
    for vm in vms[:3]:
        point(repo, vm, hours_ago=2)
    point(repo, vms[3], hours_ago=72)
    appliance(lab, "va-own", Appliance.State.READY, vm_moref=vms[27].moref)
    VirtualMachine.objects.filter(pk=vms[28].pk).update(vanished_at=timezone.now())
    VirtualMachine.objects.filter(pk=vms[29].pk).update(is_template=True)
    point(repo, vms[29], hours_ago=1)
    lab.job = job
    return lab


PROTECTED = {"vm-0000", "vm-0001", "vm-0002"}
STALE = {"vm-0003", "vm-0004", "vm-0005", "vm-0010", "vm-0015", "vm-0020", "vm-0025"}


def test_protection_panel_counts_and_links(viewer, protected_lab):
    text = page(viewer, "/")
    for state, count in (("protected", 3), ("stale", 7), ("unprotected", 17)):
        assert re.search(rf'href="/inventory/vms/\?protection={state}"><span class="n">{count}</span>', text), state
    assert "27 VMs to protect" in text and "restore point within 48 h" in text


def test_the_rpo_setting_moves_the_line(viewer, protected_lab, settings):
    settings.VAFLEET_RPO_HOURS = 96
    assert protection.counts() == {"protected": 4, "stale": 6, "unprotected": 17}
    settings.VAFLEET_RPO_HOURS = 1
    assert protection.counts() == {"protected": 0, "stale": 10, "unprotected": 17}


def test_vm_list_protection_filter(viewer, protected_lab):
    assert vm_names(page(viewer, "/inventory/vms/?protection=protected")) == PROTECTED
    assert vm_names(page(viewer, "/inventory/vms/?protection=stale")) == STALE
    unprotected = vm_names(page(viewer, "/inventory/vms/?protection=unprotected&per_page=100"))
    assert len(unprotected) == 17
    assert not unprotected & (PROTECTED | STALE | {"vm-0027", "vm-0028", "vm-0029"})
    text = page(viewer, "/inventory/vms/?protection=stale")
    assert '<option value="stale" selected>' in text
    text = page(viewer, "/inventory/vms/?protection=sometimes")
    assert "Filter “Protection” was ignored" in text


def test_in_a_job_is_the_union_of_every_jobs_selection(protected_lab, repo):
    lab = protected_lab
    by_host = BackupJob.objects.create(name="host-1", repository=repo, rules={"hosts": [lab.hosts[1].pk]})
    BackupJob.objects.create(name="by-name", repository=repo, rules={"name": "vm-001?"})
    selected = set()
    for job in BackupJob.objects.all():
        selected |= set(vms_of(job).values_list("pk", flat=True))
    union = set(VirtualMachine.objects.filter(protection.candidates() & protection.in_a_job())
                .values_list("pk", flat=True))
    assert union == selected
    assert set(vms_of(by_host).values_list("pk", flat=True)) <= union and len(union) > 10


def test_protection_filter_and_dashboard_queries_stay_bounded_at_2000_vms(viewer, repo,
                                                                         django_assert_max_num_queries):
    lab = build_lab(vm_count=2000)
    job = BackupJob.objects.create(name="all-prod", repository=repo, rules={"folders": ["prod"]})
    job.vms.set(lab.vms[:50])
    RestorePoint.objects.bulk_create(
        RestorePoint(repository=repo, rp_id=f"rp-{vm.pk}", vm=vm, vm_name=vm.name, stored_bytes=GIB,
                     taken=timezone.now() - timedelta(hours=1 if i % 2 else 100))
        for i, vm in enumerate(lab.vms[:600]))
    for state in ("protected", "stale", "unprotected"):
        with django_assert_max_num_queries(8):  # the plain list runs 6; the jobs' rules add one
            viewer.get(f"/inventory/vms/?protection={state}")
    counts = protection.counts()
    assert sum(counts.values()) == 2000 and counts["protected"] == 300
    with django_assert_max_num_queries(16):
        page(viewer, "/")


def test_last_24_hours_of_runs_count_and_link_to_the_run_list(viewer, protected_lab):
    job = protected_lab.job
    for state, n in (("succeeded", 3), ("partial", 1), ("failed", 2), ("cancelled", 1)):
        for _ in range(n):
            run(job, state)
    run(job, "failed", hours_ago=30)  # outside the 24 hours
    text = page(viewer, "/")
    for state, count in (("succeeded", 3), ("partial", 1), ("failed", 2), ("cancelled", 1)):
        assert re.search(rf'href="/jobs/runs/\?state={state}&since=24h" data-state="{state}">'
                         rf'<span class="n">{count}</span>', text), state
    assert re.search(r'href="/jobs/runs/\?since=24h">7 runs<', text)


def test_running_jobs_show_progress_and_refresh_themselves(viewer, protected_lab):
    job = protected_lab.job
    running = run(job, "running", hours_ago=0.1, started=timezone.now())
    for name, state, done, total, rate in (("a", "succeeded", 4 * GIB, 4 * GIB, 0),
                                           ("b", "running", GIB, 4 * GIB, 100 * 2**20),
                                           ("c", "queued", 0, 0, 0)):
        Task.objects.create(run=running, vm_name=name, state=state, bytes_done=done, bytes_total=total, rate=rate)
    run(job, "succeeded")  # not running: not shown
    text = page(viewer, "/")
    panel = re.search(r'<div id="running-runs".*?</ul>', text, re.S).group(0)
    assert 'hx-trigger="every 2s"' in panel and f'href="/jobs/runs/{running.pk}/"' in panel
    assert "1 of 3 VMs done, 5.0\xa0GB of 8.0\xa0GB, 100.0\xa0MB/s, about 31 s left" in panel
    assert 'aria-valuenow="62"' in panel
    fragment = page(viewer, "/jobs/runs/running/")
    assert fragment.lstrip().startswith('<div id="running-runs"') and "<html" not in fragment
    JobRun.objects.filter(pk=running.pk).update(state="succeeded")
    idle = page(viewer, "/jobs/runs/running/")
    assert "No job is running." in idle and 'hx-trigger="every 10s"' in idle


def test_repository_usage(viewer, protected_lab, repo):
    empty = Repository.objects.create(name="offsite", kind="sftp", host="backup.example.test", path="/r",
                                      passphrase="Repo-Passphrase-5151")
    text = page(viewer, "/")
    table = re.search(r'<table[^>]*id="repository-usage".*?</table>', text, re.S).group(0)
    # five points of 1 GiB (one of them the template's) against 300 GiB free
    assert re.search(rf'href="/jobs/restore-points/\?repository={repo.pk}">5<', table)
    assert "5.0\xa0GB" in table and "300.0\xa0GB" in table and 'aria-valuenow="2"' in table
    assert re.search(rf'href="/jobs/restore-points/\?repository={empty.pk}">0<', table) and "unknown" in table


def test_appliance_health(viewer, lab):
    appliance(lab, "va-a", Appliance.State.READY)
    appliance(lab, "va-b", Appliance.State.READY)
    lost = appliance(lab, "va-lost", Appliance.State.UNREACHABLE, health_message="Cannot reach 10.0.0.9:22.")
    appliance(lab, "va-new", Appliance.State.DRAFT)
    text = page(viewer, "/")
    assert re.search(r'href="/appliances/\?state=ready" data-state="ready">2 ready<', text)
    assert re.search(r'href="/appliances/\?state=unreachable" data-state="unreachable">1 unreachable<', text)
    assert re.search(r'href="/appliances/\?state=draft" data-state="draft">1 not deployed<', text)
    assert f'href="/appliances/{lost.pk}/">va-lost</a> unreachable' in text and "Cannot reach 10.0.0.9:22." in text
    listed = page(viewer, "/appliances/?state=unreachable")
    assert "va-lost" in listed and "va-a" not in listed


def test_run_list_filters_sort_and_pages(viewer, protected_lab, repo):
    job = protected_lab.job
    other = BackupJob.objects.create(name="weekly", repository=repo)
    recent_failed = run(job, "failed")
    old_failed = run(job, "failed", hours_ago=50)
    ok = run(other, "succeeded", hours_ago=3)
    Task.objects.create(run=ok, vm_name="x", state="succeeded", bytes_done=3 * GIB, bytes_total=3 * GIB)

    def run_ids(query: str) -> list[int]:
        table = re.search(r'<table[^>]*id="run-table".*?</table>', page(viewer, "/jobs/runs/" + query), re.S)
        return [int(n) for n in re.findall(r'href="/jobs/runs/(\d+)/"', table.group(0))] if table else []

    assert run_ids("") == [recent_failed.pk, ok.pk, old_failed.pk]
    assert run_ids("?state=failed&since=24h") == [recent_failed.pk]
    assert run_ids("?state=failed") == [recent_failed.pk, old_failed.pk]
    assert run_ids(f"?job={other.pk}") == [ok.pk]
    assert run_ids("?sort=created") == [old_failed.pk, ok.pk, recent_failed.pk]
    assert run_ids("?sort=-read")[0] == ok.pk
    assert run_ids("?state=succeeded&since=24h&q=week") == [ok.pk]
    text = page(viewer, f"/jobs/runs/?job={other.pk}")
    assert "Job: weekly" in text and "3.0\xa0GB" in text
    assert "Filter “Period” was ignored" in page(viewer, "/jobs/runs/?since=forever")
    for _ in range(30):
        run(job, "succeeded", hours_ago=5)
    assert len(run_ids("?per_page=25")) == 25 and len(run_ids("?per_page=25&page=2")) == 8


def test_run_list_queries_do_not_grow_with_runs(viewer, protected_lab, django_assert_max_num_queries):
    job = protected_lab.job
    for i in range(40):
        made = run(job, "succeeded", hours_ago=i)
        Task.objects.create(run=made, vm_name="a", state="succeeded", bytes_done=GIB, bytes_total=GIB)
    with django_assert_max_num_queries(5):  # session, user, role, count, rows
        page(viewer, "/jobs/runs/?per_page=200")


def test_a_viewer_sees_every_panel_but_no_action(viewer, operator, protected_lab):
    running = run(protected_lab.job, "running")
    Task.objects.create(run=running, vm_name="a", state="running", bytes_done=1, bytes_total=2)
    text = page(viewer, "/")
    for heading in ("Protection", "Last 24 hours of runs", "Running jobs", "Repository usage", "Appliance health"):
        assert f">{heading}</h2>" in text
    assert f'href="/jobs/runs/{running.pk}/"' in text
    assert "<form" not in text.split('id="main"')[1].split("</main>")[0]
    assert f'action="/jobs/runs/{running.pk}/cancel/"' in page(operator, "/")
    assert "Add connection" not in text and "Add a repository" not in text
