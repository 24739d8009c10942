"""Portal pages of backup jobs, their runs and tasks: list, form, detail with "Run now", run and task pages.

Viewers see; operators run jobs and cancel runs and tasks; administrators create, change and delete
jobs. Pages work without JavaScript: reloading a run or a task shows its progress; with it, run and task
pages follow their progress live (static/js/jobs-live.js, jobs.consumers).
"""

from __future__ import annotations

import django_filters
from django.contrib import messages
from django.db.models import OuterRef, Q, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core import audit
from core.errors import ActionableError
from core.models import AuditEntry
from core.rbac import ADMINISTER, OPERATE, VIEW
from core.views import role_required
from inventory.views.listing import ListSpec, count_of, render_list
from jobs import live, services
from jobs.forms import SELECT_ALL_LIMIT, JobForm, next_run, vm_matches, vm_picker_page
from jobs.models import BackupJob, JobRun, Repository, Task, TaskEvent
from jobs.selection import vms_of

RECENT_RUNS = 15
SELECTED_SHOWN = 200
ACTIVE = (JobRun.State.QUEUED, JobRun.State.RUNNING)
RUN_LOG_LINES = 500  # the run page's live log keeps as many
RUN_LOG_KINDS = ("log", "phase", "error")


class JobFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = BackupJob
        fields = ["repository", "enabled"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(repository__name__icontains=value))


def _last_run(field: str) -> Subquery:
    return Subquery(JobRun.objects.filter(job=OuterRef("pk")).order_by("-created", "-pk").values(field)[:1])


JOBS = ListSpec(
    template="jobs/job_list.html",
    rows_template="jobs/_job_rows.html",
    filterset_class=JobFilterSet,
    sorts={
        "name": ("name",),
        "repository": ("repository__name", "name"),
        "vms": ("vm_count", "name"),
        "schedule": ("schedule", "name"),
        "last": ("last_run_created",),
    },
)


@role_required(VIEW)
def job_list(request: HttpRequest) -> HttpResponse:
    rows = (BackupJob.objects.select_related("repository")
            .annotate(vm_count=count_of(BackupJob.vms.through, "backupjob"), last_run_id=_last_run("pk"),
                      last_run_state=_last_run("state"), last_run_created=_last_run("created")))
    repositories = Repository.objects.defer("password", "passphrase").order_by("name")
    return render_list(request, JOBS, rows, repositories=repositories, states=dict(JobRun.State.choices))


@role_required(VIEW)
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BackupJob.objects.select_related("repository"), pk=pk)
    selected = vms_of(job)
    runs = job.runs.select_related("created_by").annotate(
        task_count=count_of(Task, "run"), ok_count=count_of(Task, "run", state=Task.State.SUCCEEDED))
    rules = job.rules or {}
    from inventory.models import Host

    context = {
        "job": job,
        "selected": selected[:SELECTED_SHOWN],
        "selected_count": selected.count(),
        "selected_limit": SELECTED_SHOWN,
        "chosen_count": job.vms.count(),
        "rule_hosts": Host.objects.filter(pk__in=rules.get("hosts") or []).order_by("name"),
        "rules": rules,
        "runs": runs[:RECENT_RUNS],
        "next_run": next_run(job.schedule) if job.enabled else None,
        "history": AuditEntry.objects.filter(object_type=BackupJob._meta.label, object_id=str(job.pk))[:10],
    }
    return render(request, "jobs/job_detail.html", context)


@role_required(ADMINISTER)
def job_add(request: HttpRequest) -> HttpResponse:
    initial = {"repository": request.GET["repository"]} if request.GET.get("repository", "").isdigit() else {}
    form = JobForm(request.POST or None, initial=initial, connection=request.GET.get("connection"))
    return _save(request, form, None)


@role_required(ADMINISTER)
def job_edit(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BackupJob, pk=pk)
    form = JobForm(request.POST or None, instance=job, connection=request.GET.get("connection"))
    return _save(request, form, job)


def _save(request: HttpRequest, form: JobForm, job: BackupJob | None) -> HttpResponse:
    # "Narrow" (the no-JavaScript way to narrow the lists by connection) shows the form again, unsaved.
    if request.method == "POST" and "narrow" not in request.POST and form.is_valid():
        saved = form.save()
        messages.success(request, f"Backup job {saved.name} {'saved' if job else 'added'}.")
        return redirect("jobs:job_detail", saved.pk)
    return render(request, "jobs/job_form.html", {"form": form, "job": job})


@require_GET
@role_required(ADMINISTER)
def job_vm_choices(request: HttpRequest) -> HttpResponse:
    """The job form's VM picker: one page of the VMs matching `vm_q` (name, host or folder), or with `all`
    the chips of every match (up to SELECT_ALL_LIMIT). A change of connection also redraws the host list."""
    search, connection = request.GET.get("vm_q", ""), request.GET.get("connection") or None
    if request.GET.get("all"):
        matches = vm_matches(search, connection).only("pk", "name")[:SELECT_ALL_LIMIT]
        return render(request, "jobs/_job_vm_chips.html", {"chosen_vms": matches})
    context = vm_picker_page(search, connection, request.GET.get("vm_page"), request.GET.getlist("vms"))
    if request.htmx and request.htmx.trigger_name == "connection":
        context["hosts_form"] = JobForm(initial={"rule_hosts": request.GET.getlist("rule_hosts")},
                                        connection=connection)
    return render(request, "jobs/_job_vm_choices.html", context)


@role_required(ADMINISTER)
def job_delete(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BackupJob, pk=pk)
    active = job.runs.filter(state__in=ACTIVE).exists()
    refusal = (f"Job {job.name} has a run in progress: cancel it or wait for it to end, then delete the job."
               if active else "")
    if request.method == "POST":
        if refusal:
            messages.error(request, refusal)
            return redirect("jobs:job_detail", job.pk)
        name = job.name
        job.delete()
        messages.success(request, f"Backup job {name} was deleted; its runs and restore points are kept.")
        return redirect("jobs:job_list")
    return render(request, "jobs/job_confirm_delete.html", {"job": job, "refusal": refusal})


@require_POST
@role_required(OPERATE)
def job_run(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BackupJob.objects.select_related("repository"), pk=pk)
    try:
        run = services.start_run(job, request.user, "manual")
    except ActionableError as exc:
        messages.error(request, str(exc))
        return redirect("jobs:job_detail", job.pk)
    audit.record(AuditEntry.Action.OPERATION, job, message=f"run #{run.pk} started")
    messages.success(request, f"Run #{run.pk} of {job.name} queued: {run.tasks.count()} VM(s) to back up.")
    return redirect("jobs:run_detail", run.pk)


# --- Runs and tasks ----------------------------------------------------------------------------------------


@role_required(VIEW)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(JobRun.objects.select_related("job", "created_by"), pk=pk)
    tasks = list(run.tasks.select_related("appliance").order_by("vm_name", "pk"))
    counts = {state: 0 for state in Task.State.values}
    for task in tasks:
        counts[task.state] += 1
    context = {"run": run, "tasks": tasks, "counts": counts, "active": run.state in ACTIVE,
               "bytes_done": sum(t.bytes_done for t in tasks), "bytes_total": sum(t.bytes_total for t in tasks),
               "log_lines": run_log(tasks)}
    return render(request, "jobs/run_detail.html", context)


def run_log(tasks: list[Task], limit: int = RUN_LOG_LINES) -> list[tuple[TaskEvent, str, str]]:
    """The run's last log, phase and error lines (event, VM, text), oldest first, up to each task's seq as read
    with `tasks`: the live socket resumes after those seqs, so no line is shown twice."""
    last_seq = {task.pk: task.last_seq for task in tasks}
    vm_names = {task.pk: task.vm_name for task in tasks}
    rows = (TaskEvent.objects.filter(task__in=list(last_seq), type__in=RUN_LOG_KINDS)
            .only("task_id", "seq", "type", "data", "time").order_by("-pk")[:limit])
    return [(row, vm_names[row.task_id], describe(row)) for row in reversed(rows) if row.seq <= last_seq[row.task_id]]


@require_POST
@role_required(OPERATE)
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(JobRun.objects.select_related("job"), pk=pk)
    try:
        services.cancel_run(run)
    except ActionableError as exc:
        messages.error(request, str(exc))
    else:
        audit.record(AuditEntry.Action.OPERATION, run.job or run, message=f"run #{run.pk}: cancel requested")
        messages.success(request, f"Cancelling {run}: queued VMs are skipped, running backups stop and release "
                                  "their snapshots.")
    return redirect("jobs:run_detail", run.pk)


@role_required(VIEW)
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("run", "appliance", "restore_point", "repository",
                                                         "created_by"), pk=pk)
    events = [(event, describe(event)) for event in TaskEvent.objects.filter(task=task, seq__lte=task.last_seq)
              .order_by("seq")]
    context = {"task": task, "events": events, "percent": live.percent(task.bytes_done, task.bytes_total,
                                                                       task.state == Task.State.SUCCEEDED)}
    return render(request, "jobs/task_detail.html", context)


@require_POST
@role_required(OPERATE)
def task_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("run", "run__job"), pk=pk)
    try:
        services.cancel_task(task)
    except ActionableError as exc:
        messages.error(request, str(exc))
    else:
        audit.record(AuditEntry.Action.OPERATION, task.run.job if task.run and task.run.job else task,
                     message=f"task #{task.pk} ({task.vm_name}): cancel requested")
        messages.success(request, f"Cancelling {task}.")
    back = request.POST.get("next", "")
    if back == "run" and task.run_id:
        return redirect("jobs:run_detail", task.run_id)
    return redirect(reverse("jobs:task_detail", args=[task.pk]))


def describe(event: TaskEvent) -> str:
    """One line for an event: what an operator reads in the task's log."""
    data = event.data or {}
    if event.type == "phase":
        return f"{data.get('phase', '')}: {data.get('message', '')}".strip(": ")
    if event.type == "progress":
        done, total = int(data.get("done") or 0), int(data.get("total") or 0)
        share = f" ({100 * done // total} %)" if total else ""
        rate = f", {int(data.get('rate') or 0) / 2**20:.1f} MiB/s" if data.get("rate") else ""
        return f"{done / 2**20:.1f} of {total / 2**20:.1f} MiB{share}{rate}"
    if event.type in ("log", "error") and "message" in data:
        return str(data["message"])
    if event.type == "result":
        shown = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
        return ", ".join(f"{k}: {v}" for k, v in sorted(shown.items())) or "Finished."
    return ", ".join(f"{k}: {v}" for k, v in sorted(data.items()))  # PostgreSQL's jsonb does not keep key order
