"""Portal pages of runs across every job: the run list (state, period, job) and the running runs' progress.

The running runs fragment is what the dashboard refreshes every 2 s; without JavaScript the dashboard
shows the progress as of its loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import django_filters
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from core.rbac import VIEW
from core.views import role_required
from inventory.views.listing import ListSpec, count_of, narrowing, render_list
from jobs import live
from jobs.models import BackupJob, JobRun, Task

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERIOD_CHOICES = (("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"))
ACTIVE = (JobRun.State.QUEUED, JobRun.State.RUNNING)
ENDED_TASKS = (Task.State.SUCCEEDED, Task.State.FAILED, Task.State.CANCELLED)


def since(period: str) -> datetime:
    """The start of a period of PERIODS ("24h", "7d", "30d"), from now."""
    return timezone.now() - PERIODS[period]


class RunFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(field_name="job_name", lookup_expr="icontains", label="Search")
    state = django_filters.ChoiceFilter(choices=JobRun.State.choices)
    since = django_filters.ChoiceFilter(choices=PERIOD_CHOICES, method="started_since", label="Period")
    job = django_filters.NumberFilter()

    class Meta:
        model = JobRun
        fields = ["state", "job"]

    def started_since(self, queryset, name, value):
        return queryset.filter(created__gte=since(value))


def _read_bytes() -> Coalesce:
    read = (Task.objects.filter(run=OuterRef("pk")).order_by().values("run")
            .annotate(n=Sum("bytes_done")).values("n"))
    return Coalesce(Subquery(read, output_field=IntegerField()), 0)


RUNS = ListSpec(
    template="jobs/run_list.html",
    rows_template="jobs/_run_rows.html",
    filterset_class=RunFilterSet,
    sorts={
        "created": ("created",),
        "job": ("job_name", "-created"),
        "state": ("state", "-created"),
        "finished": ("finished",),
        "vms": ("task_count",),
        "read": ("read_bytes",),
    },
    default_sort="-created",
)


@role_required(VIEW)
def run_list(request: HttpRequest) -> HttpResponse:
    rows = JobRun.objects.select_related("created_by").annotate(
        task_count=count_of(Task, "run"), ok_count=count_of(Task, "run", state=Task.State.SUCCEEDED),
        read_bytes=_read_bytes())
    return render_list(request, RUNS, rows, states=JobRun.State.choices, periods=PERIOD_CHOICES,
                       narrowed_by=narrowing(request, (("job", BackupJob, "Job"),)))


@dataclass
class RunProgress:
    run: JobRun
    bytes_done: int
    bytes_total: int
    vms_done: int
    vms_total: int
    rate: int  # bytes per second, summed over the running VMs

    @property
    def percent(self) -> int:
        """By bytes as the live run state counts them; by VMs ended while no size is known yet."""
        by_bytes = live.percent(self.bytes_done, self.bytes_total)
        if by_bytes is not None:
            return by_bytes
        return 100 * self.vms_done // self.vms_total if self.vms_total else 0

    @property
    def eta(self) -> float | None:
        """Seconds left for the bytes known so far, at the current rate; None while nothing moves."""
        if not self.rate or self.bytes_total <= self.bytes_done:
            return None
        return (self.bytes_total - self.bytes_done) / self.rate


def running_runs() -> list[RunProgress]:
    """Queued and running runs with their tasks' summed progress (one query)."""
    task = Q(tasks__kind=Task.Kind.BACKUP)
    runs: QuerySet[JobRun] = (
        JobRun.objects.filter(state__in=ACTIVE).order_by("created", "pk")
        .annotate(done=Coalesce(Sum("tasks__bytes_done", filter=task), 0),
                  total=Coalesce(Sum("tasks__bytes_total", filter=task), 0),
                  rate_sum=Coalesce(Sum("tasks__rate", filter=task & Q(tasks__state=Task.State.RUNNING)), 0),
                  vms=Count("tasks", filter=task),
                  vms_ended=Count("tasks", filter=task & Q(tasks__state__in=ENDED_TASKS)))
    )
    return [RunProgress(run, run.done, run.total, run.vms_ended, run.vms, run.rate_sum) for run in runs]


@require_GET
@role_required(VIEW)
def running_fragment(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/_running_runs.html", {"running": running_runs()})
