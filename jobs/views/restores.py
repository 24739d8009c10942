"""Portal pages of restore points: the catalog list, and the restore form (operators).

A restore point is restored as a new VM (host, then a datastore the host mounts and a network it sees)
or as disk images into a folder on an appliance. The form narrows the datastores and networks to the
chosen host; without JavaScript the "Show the host's datastores" button does the same.
"""

from __future__ import annotations

import django_filters
from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from core import audit
from core.errors import ActionableError
from core.models import AuditEntry
from core.rbac import OPERATE, VIEW
from core.views import role_required
from inventory.models import VirtualMachine
from inventory.views.listing import ListSpec, narrowing, render_list
from jobs import services
from jobs.forms import RestoreForm
from jobs.models import Repository, RestorePoint

KINDS = ("full", "incremental-cbt", "incremental")


class RestorePointFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    vm = django_filters.NumberFilter()

    class Meta:
        model = RestorePoint
        fields = ["repository", "kind", "vm"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(vm_name__icontains=value) | Q(vm__name__icontains=value) | Q(rp_id__icontains=value)
                               | Q(vm_config__name__icontains=value))


POINTS = ListSpec(
    template="jobs/restore_point_list.html",
    rows_template="jobs/_restore_point_rows.html",
    filterset_class=RestorePointFilterSet,
    sorts={
        "taken": ("taken",),
        "vm": ("vm__name", "vm_name", "-taken"),
        "kind": ("kind", "-taken"),
        "size": ("logical_bytes",),
        "stored": ("stored_bytes",),
        "repository": ("repository__name", "-taken"),
    },
    default_sort="-taken",
)


@role_required(VIEW)
def restore_point_list(request: HttpRequest) -> HttpResponse:
    rows = RestorePoint.objects.select_related("repository", "vm")
    return render_list(request, POINTS, rows,
                       repositories=Repository.objects.defer("password", "passphrase").order_by("name"),
                       narrowed_by=narrowing(request, (("vm", VirtualMachine, "VM"),)), kinds=KINDS)


@role_required(OPERATE)
def restore_point_restore(request: HttpRequest, pk: int) -> HttpResponse:
    point = get_object_or_404(RestorePoint.objects.select_related("repository", "vm", "vm__host"), pk=pk)
    name = (point.vm_config or {}).get("name") or point.vm_name
    initial = {"name": f"{name}-restored"}
    if point.vm is not None and point.vm.host_id and point.vm.vanished_at is None:
        initial["host"] = point.vm.host_id
    form = RestoreForm(request.POST or None, initial=initial, point=point)
    if request.method == "POST" and "narrow" not in request.POST and form.is_valid():
        try:
            task = services.start_restore(point, form.destination(form.cleaned_data), request.user)
        except ActionableError as exc:
            form.add_error(None, str(exc))
        else:
            audit.record(AuditEntry.Action.OPERATION, point.repository,
                         message=f"restore #{task.pk} of {name} ({point.rp_id}) queued")
            messages.success(request, f"Restore of {name} queued: follow it here.")
            return redirect("jobs:task_detail", task.pk)
    return render(request, "jobs/restore_form.html", {"form": form, "point": point, "point_name": name})


@require_GET
@role_required(OPERATE)
def restore_host_choices(request: HttpRequest) -> HttpResponse:
    """The datastore and network lists of the restore form, narrowed to the chosen host (the htmx swap)."""
    form = RestoreForm(initial={"host": request.GET.get("host", "")})
    return render(request, "jobs/_restore_host_choices.html", {"form": form})
