"""Run history: the JSON the charts read (duration, bytes read, MB/s, state per ended run; per-day totals),
the History page with its job picker, period and tables, and the job page's small version."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import BackupJob, JobRun, Repository, Task

MB = 1_000_000


@pytest.fixture
def jobs(db):
    repo = Repository.objects.create(name="nas", kind="local", path="/srv/repo", passphrase="Repo-Passphrase-5150")
    return (BackupJob.objects.create(name="nightly", repository=repo),
            BackupJob.objects.create(name="weekly", repository=repo))


def ended_run(job, state: str, days_ago: float, seconds: int, reads: list[int], progress_only: int = 0) -> JobRun:
    """A run that started `days_ago` and took `seconds`, one backup task per entry of `reads` (engine stats)."""
    started = timezone.now() - timedelta(days=days_ago)
    run = JobRun.objects.create(job=job, job_name=job.name, state=state, started=started,
                                finished=started + timedelta(seconds=seconds))
    JobRun.objects.filter(pk=run.pk).update(created=started)
    for i, read in enumerate(reads):
        Task.objects.create(run=run, vm_name=f"vm-{i}", state="succeeded", bytes_done=read // 2,
                            result={"stats": {"read_bytes": read, "stored_bytes": read // 4}})
    if progress_only:  # a task that failed before the engine reported its figures
        Task.objects.create(run=run, vm_name="lost", state="failed", bytes_done=progress_only)
    Task.objects.create(kind=Task.Kind.RESTORE, vm_name="restored", state="succeeded", bytes_done=10**12,
                        result={"stats": {"read_bytes": 10**12}})  # not a run's: never counted
    run.refresh_from_db()
    return run


@pytest.fixture
def history(jobs):
    nightly, weekly = jobs
    runs = {
        "old": ended_run(nightly, "succeeded", days_ago=20, seconds=100, reads=[400 * MB, 100 * MB]),
        "partial": ended_run(nightly, "partial", days_ago=2, seconds=250, reads=[1000 * MB], progress_only=250 * MB),
        "weekly": ended_run(weekly, "failed", days_ago=1, seconds=10, reads=[]),
        "ancient": ended_run(nightly, "succeeded", days_ago=60, seconds=60, reads=[60 * MB]),
    }
    running = JobRun.objects.create(job=nightly, job_name="nightly", state="running", started=timezone.now())
    Task.objects.create(run=running, vm_name="now", state="running", bytes_done=5 * MB)
    return runs


def data(client, query: str) -> dict:
    response = client.get("/jobs/history/data/" + query)
    assert response.status_code == 200, response.content
    return response.json()


def test_history_json_of_one_job(viewer, jobs, history):
    nightly = jobs[0]
    body = data(viewer, f"?job={nightly.pk}&days=30")
    assert body["job"] == nightly.pk and body["job_name"] == "nightly" and body["days"] == 30
    runs = body["runs"]
    assert [r["id"] for r in runs] == [history["old"].pk, history["partial"].pk]  # oldest first, no running run
    old, partial = runs
    assert old["duration_s"] == 100 and old["bytes_read"] == 500 * MB and old["mbps"] == 5.0
    assert old["state"] == "succeeded" and old["start"] == int(history["old"].started.timestamp())
    assert partial["bytes_read"] == 1250 * MB and partial["mbps"] == 5.0 and partial["state"] == "partial"
    assert partial["started"] == history["partial"].started.isoformat()
    assert [r["id"] for r in data(viewer, f"?job={nightly.pk}&days=90")["runs"]][0] == history["ancient"].pk
    assert data(viewer, f"?job={nightly.pk}&days=7")["runs"] == [partial]


def test_history_json_of_the_fleet_with_daily_totals(viewer, history):
    body = data(viewer, "?days=30")
    assert body["job"] is None
    assert [r["job_name"] for r in body["runs"]] == ["nightly", "nightly", "weekly"]
    assert body["runs"][2]["bytes_read"] == 0 and body["runs"][2]["mbps"] == 0.0
    assert [d["runs"] for d in body["daily"]] == [1, 1, 1]
    assert [d["failed"] for d in body["daily"]] == [0, 1, 1]
    assert body["daily"][0]["bytes_read"] == 500 * MB and body["daily"][0]["mbps"] == 5.0
    assert data(viewer, "")["days"] == 30


@pytest.mark.parametrize("query, sentence", [
    ("?days=14", "Period “14” is not offered: choose 7, 30 or 90 days."),
    ("?job=web", "Job “web” is not a job number: pick a job in the list."),
    ("?job=999", "Job #999 does not exist (deleted?): pick a job in the list."),
])
def test_bad_history_queries_get_a_sentence(viewer, jobs, query, sentence):
    response = viewer.get("/jobs/history/data/" + query)
    assert response.status_code == 400 and response.json() == {"error": sentence}
    page = viewer.get("/jobs/history/" + query)
    assert page.status_code == 400 and sentence in html.unescape(page.content.decode())


def test_history_page_has_picker_period_chart_and_tables(viewer, jobs, history):
    nightly = jobs[0]
    response = viewer.get(f"/jobs/history/?job={nightly.pk}&days=7")
    text = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert f'<option value="{nightly.pk}" selected>nightly</option>' in text
    assert 'value="7" checked' in text
    assert f'data-history-url="/jobs/history/data/?job={nightly.pk}&days=7"' in text
    assert "vendor/uplot/uPlot.iife.min.js" in text and "js/history.js" in text
    assert "<summary>Show as table</summary>" in text
    table = re.search(r'<table[^>]*id="history-runs".*?</table>', text, re.S).group(0)
    assert f'href="/jobs/runs/{history["partial"].pk}/"' in table and "4 min 10 s" in table
    assert "1.2\xa0GB" in table and ">5.0<" in table  # 1,250 MB, shown in binary units
    assert f'/jobs/runs/{history["old"].pk}/' not in table  # 20 days ago: outside 7 days
    assert 'class="nav-link active" href="/jobs/history/"' in text

    fleet = html.unescape(viewer.get("/jobs/history/?days=90").content.decode())
    assert 'id="history-daily"' in fleet and 'data-chart="daily"' in fleet
    assert fleet.count('href="/jobs/runs/') >= 4


def test_history_page_without_runs_says_so(viewer, jobs):
    text = viewer.get("/jobs/history/").content.decode()
    assert "No run ended in the last 30 days." in text and "data-chart" not in text


def test_job_page_loads_its_small_history(viewer, jobs, history):
    nightly = jobs[0]
    page = viewer.get(f"/jobs/{nightly.pk}/").content.decode()
    assert f'hx-get="/jobs/{nightly.pk}/history/"' in page and "js/history.js" in page
    assert f'href="/jobs/runs/?job={nightly.pk}"' in page
    panel = html.unescape(viewer.get(f"/jobs/{nightly.pk}/history/").content.decode())
    assert "<html" not in panel and 'data-compact="1"' in panel and 'data-chart="daily"' not in panel
    assert f'data-history-url="/jobs/history/data/?job={nightly.pk}&days=30"' in panel
    assert panel.count('href="/jobs/runs/') == 2
    assert viewer.get("/jobs/999/history/").status_code == 404


def test_history_is_read_only_for_a_viewer(viewer, jobs, history):
    text = viewer.get("/jobs/history/").content.decode()
    main = text.split('id="main"')[1]
    assert 'method="post"' not in main and "Run now" not in main
