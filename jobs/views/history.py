"""Run history: throughput and duration of each ended run over 7, 30 or 90 days, for one job or the fleet.

The page and the job page's panel render the numbers as tables; the charts (static/js/history.js,
uPlot) read the same numbers from the JSON endpoint.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db.models import BigIntegerField, F, Q, Sum
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from core.rbac import VIEW
from core.text import duration_text
from core.views import role_required
from jobs.models import BackupJob, JobRun, Task

PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_RUNS = 5000  # newest first; a chart of more points says nothing more
MB = 1_000_000


@dataclass
class RunPoint:
    id: int
    job_id: int | None
    job_name: str
    state: str
    started: str  # ISO 8601
    start: int  # Unix time, for the chart's x axis
    duration_s: int
    bytes_read: int
    mbps: float

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.started)

    @property
    def duration_text(self) -> str:
        return duration_text(self.duration_s)


class BadHistoryQuery(ValueError):
    pass


def parse(params) -> tuple[BackupJob | None, int]:
    """The job (None: every job) and the number of days asked for; BadHistoryQuery says what is wrong."""
    raw_days = params.get("days") or str(DEFAULT_DAYS)
    if raw_days not in {str(d) for d in PERIODS}:
        raise BadHistoryQuery(f"Period “{raw_days}” is not offered: choose 7, 30 or 90 days.")
    job = None
    raw_job = params.get("job") or ""
    if raw_job:
        if not raw_job.isdigit():
            raise BadHistoryQuery(f"Job “{raw_job}” is not a job number: pick a job in the list.")
        job = BackupJob.objects.filter(pk=raw_job).only("pk", "name").first()
        if job is None:
            raise BadHistoryQuery(f"Job #{raw_job} does not exist (deleted?): pick a job in the list.")
    return job, int(raw_days)


def run_points(job: BackupJob | None, days: int) -> list[RunPoint]:
    """Ended runs started within `days`, oldest first (one query)."""
    backup = Q(tasks__kind=Task.Kind.BACKUP)
    # the engine's count of bytes read; progress bytes for tasks that ended without a result
    engine_read = KeyTextTransform("read_bytes", KeyTransform("stats", "tasks__result"))
    read = Coalesce(Cast(engine_read, BigIntegerField()), F("tasks__bytes_done"))
    runs = (JobRun.objects.filter(created__gte=timezone.now() - timedelta(days=days), finished__isnull=False)
            .exclude(state__in=(JobRun.State.QUEUED, JobRun.State.RUNNING)))
    if job is not None:
        runs = runs.filter(job=job)
    rows = (runs.annotate(read=Coalesce(Sum(read, filter=backup), 0)).order_by("-created", "-pk")
            .values("pk", "job_id", "job_name", "state", "created", "started", "finished", "read")[:MAX_RUNS])
    points = []
    for row in reversed(rows):
        began: datetime = row["started"] or row["created"]
        seconds = max(0.0, (row["finished"] - began).total_seconds())
        points.append(RunPoint(
            id=row["pk"], job_id=row["job_id"], job_name=row["job_name"], state=row["state"],
            started=began.isoformat(), start=int(began.timestamp()), duration_s=round(seconds),
            bytes_read=row["read"], mbps=round(row["read"] / MB / seconds, 1) if seconds else 0.0))
    return points


def daily_totals(points: list[RunPoint]) -> list[dict]:
    """Per day (server time zone): runs, failed runs, bytes read, and the mean throughput of its runs."""
    days: dict[str, dict] = defaultdict(lambda: {"runs": 0, "failed": 0, "bytes_read": 0, "seconds": 0})
    for point in points:
        day = timezone.localtime(point.started_at).date().isoformat()
        totals = days[day]
        totals["runs"] += 1
        totals["failed"] += point.state in (JobRun.State.FAILED, JobRun.State.PARTIAL)
        totals["bytes_read"] += point.bytes_read
        totals["seconds"] += point.duration_s
    return [{"day": day, "runs": t["runs"], "failed": t["failed"], "bytes_read": t["bytes_read"],
             "mbps": round(t["bytes_read"] / MB / t["seconds"], 1) if t["seconds"] else 0.0}
            for day, t in sorted(days.items())]


def _context(job: BackupJob | None, days: int, compact: bool = False) -> dict:
    points = run_points(job, days)
    query = f"?job={job.pk}&days={days}" if job else f"?days={days}"
    return {"job": job, "days": days, "periods": PERIODS, "points": points, "daily": daily_totals(points),
            "data_url": reverse("jobs:history_data") + query, "page_url": reverse("jobs:history") + query,
            "compact": compact}


@require_GET
@role_required(VIEW)
def history(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        job, days = parse(request.GET)
    except BadHistoryQuery as exc:
        error, job, days = str(exc), None, DEFAULT_DAYS
    context = _context(job, days)
    context.update(error=error, jobs=BackupJob.objects.only("pk", "name").order_by("name"))
    return render(request, "jobs/history.html", context, status=400 if error else 200)


@require_GET
@role_required(VIEW)
def history_data(request: HttpRequest) -> JsonResponse:
    try:
        job, days = parse(request.GET)
    except BadHistoryQuery as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    points = run_points(job, days)
    return JsonResponse({"job": job.pk if job else None, "job_name": job.name if job else "", "days": days,
                         "runs": [asdict(p) for p in points], "daily": daily_totals(points)})


@require_GET
@role_required(VIEW)
def history_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """One job's last 30 days, compact: the fragment the job page loads."""
    job = get_object_or_404(BackupJob.objects.only("pk", "name"), pk=pk)
    return render(request, "jobs/_history_panel.html", _context(job, DEFAULT_DAYS, compact=True))
