"""Portal pages of the core app: the dashboard and the audit log, plus the access check every portal view uses."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
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
    return render(request, "core/dashboard.html", context)


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
