"""Portal pages of the core app: the dashboard and the audit log, plus the access check every portal view uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import BigIntegerField, Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.models import AuditEntry
from core.rbac import ADMINISTER, OPERATE, VIEW, Role, role_of

# What a refused user reads, per role needed.
REFUSALS = {
    VIEW: "You need the viewer role to see this page.",
    OPERATE: "Only operators and administrators can do this; ask an administrator for the operator role.",
    ADMINISTER: "Only administrators can change the configuration; ask an administrator to do it for you.",
}


def role_required(needed: Role) -> Callable:
    """Portal view decorator: log in first, then a role of at least `needed` (403 with a sentence otherwise)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                back_to = (request.htmx.current_url_abs_path or "/") if request.htmx else request.get_full_path()
                login = redirect_to_login(back_to)
                if request.htmx:  # a fragment must not become a login form: reload the whole page there
                    response = HttpResponse(status=204)
                    response["HX-Redirect"] = login.url
                    return response
                return login
            current = role_of(request.user)
            if current == Role.NONE:
                return render(request, "core/no_role.html", status=403)
            if current < needed:
                raise PermissionDenied(REFUSALS[needed])
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


@role_required(VIEW)
def dashboard(request: HttpRequest) -> HttpResponse:
    from inventory.models import Connection, Datastore, Host, VirtualMachine

    by_status = dict(Connection.objects.values_list("status").annotate(n=Count("pk")).order_by())
    statuses = [(value, label, by_status.get(value, 0)) for value, label in Connection.Status.choices]
    present = Q(vanished_at__isnull=True)
    vm_counts = VirtualMachine.objects.filter(present).aggregate(
        total=Count("pk"),
        on=Count("pk", filter=Q(power_state=VirtualMachine.PowerState.ON)),
        off=Count("pk", filter=Q(power_state=VirtualMachine.PowerState.OFF)),
    )
    context = {
        "connection_total": sum(by_status.values()),
        "statuses": statuses,
        "host_count": Host.objects.filter(present).count(),
        "datastore_count": Datastore.objects.filter(present).count(),
        "vm_counts": vm_counts,
        "failing": Connection.objects.filter(status=Connection.Status.ERROR).only(
            "name", "status", "status_message", "last_sync_finished"
        ),
        "recent": AuditEntry.objects.all()[:12],
    }
    context.update(_protection_panels())
    return render(request, "core/dashboard.html", context)


def _protection_panels() -> dict:
    """The dashboard's backup panels: protection, the last 24 h of runs, running jobs, repositories, appliances."""
    from django.conf import settings

    from appliances.models import Appliance
    from inventory.views.listing import count_of
    from jobs import protection
    from jobs.models import JobRun, Repository, RestorePoint
    from jobs.views.runs import running_runs, since

    protected = protection.counts()
    runs_by_state = dict(JobRun.objects.filter(created__gte=since("24h")).values_list("state")
                         .annotate(n=Count("pk")).order_by())
    ended = (JobRun.State.SUCCEEDED, JobRun.State.PARTIAL, JobRun.State.FAILED, JobRun.State.CANCELLED)
    stored = (RestorePoint.objects.filter(repository=OuterRef("pk")).order_by().values("repository")
              .annotate(n=Sum("stored_bytes")).values("n"))
    repositories = list(Repository.objects.defer("password", "passphrase").annotate(
        stored=Coalesce(Subquery(stored, output_field=BigIntegerField()), 0),
        point_count=count_of(RestorePoint, "repository")))
    for repository in repositories:  # the bar: its restore points against the space still free
        known = repository.stored + (repository.free_bytes or 0)
        repository.used_percent = None
        if repository.free_bytes is not None and known:
            repository.used_percent = round(100 * repository.stored / known)
    by_state = dict(Appliance.objects.values_list("state").annotate(n=Count("pk")).order_by())
    return {
        "protection": protected,
        "protection_total": sum(protected.values()),
        "rpo_hours": settings.VAFLEET_RPO_HOURS,
        "runs_24h": [(state, JobRun.State(state).label, runs_by_state.get(state, 0)) for state in ended],
        "runs_24h_total": sum(runs_by_state.values()),
        "running": running_runs(),
        "repositories": repositories,
        "appliance_states": [(value, label, by_state.get(value, 0)) for value, label in Appliance.State.choices],
        "appliance_total": sum(by_state.values()),
        "unreachable": Appliance.objects.filter(state=Appliance.State.UNREACHABLE).only(
            "pk", "name", "health_message", "last_seen").order_by("name"),
    }


AUDIT_PAGE_SIZE = 50


@role_required(VIEW)
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.all()
    query = request.GET.get("q", "").strip()
    if query:
        entries = entries.filter(
            Q(object_repr__icontains=query) | Q(username__icontains=query) | Q(message__icontains=query)
        )
    action = request.GET.get("action", "")
    if action in AuditEntry.Action.values:
        entries = entries.filter(action=action)
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "query": query, "action": action, "actions": AuditEntry.Action.choices}
    template = "core/_audit_rows.html" if request.htmx and request.htmx.target == "results" else "core/audit.html"
    return render(request, template, context)
