"""Portal pages of restore points: the catalog list, and the restore wizard (operators).

The wizard asks what to restore (the whole VM, one disk, disk images), then where (a new VM on a host,
a datastore it mounts and a network it sees; the VM's own disks; a disk of an existing VM; a folder on
an appliance), then shows every choice before it starts the restore and opens the task's page.
Overwriting disks needs the VM's name typed. The steps are swapped in place by htmx and work as plain
POSTs too: the "Show ..." buttons (`narrow`) show the same step again with narrowed lists.
"""

from __future__ import annotations

import django_filters
from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRedirect

from core import audit
from core.errors import ActionableError
from core.models import AuditEntry
from core.rbac import OPERATE, VIEW
from core.views import role_required
from inventory.models import VirtualMachine
from inventory.views.listing import ListSpec, narrowing, render_list
from jobs import services
from jobs.api.serializers import point_name
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
    """The restore wizard: each step posts every choice so far; Back and "narrow" show a step again, unchecked."""
    point = get_object_or_404(RestorePoint.objects.select_related("repository", "vm", "vm__host"), pk=pk)
    name = point_name(point)
    if request.method != "POST":
        initial = {"what": "vm", "place": "new_vm", "name": f"{name}-restored"}
        if point.vm is not None and point.vm.host_id and point.vm.vanished_at is None:
            initial["host"] = point.vm.host_id
        return _step(request, point, RestoreForm(initial=initial, point=point), 1)
    posted = RestoreForm(request.POST, point=point)
    step, go = posted.chosen_step, request.POST.get("go", "next")
    if "narrow" in request.POST or go == "back":
        shown = step if "narrow" in request.POST else max(1, step - 1)
        return _step(request, point, RestoreForm(initial=_carried(request), point=point), shown)
    if not posted.is_valid():  # shown on the step whose field is wrong (the summary needs valid choices)
        return _step(request, point, posted, 1 if "what" in posted.errors else min(step, 2))
    if step == 1:
        return _step(request, point, RestoreForm(initial=_carried(request), point=point), 2)
    if step == 2 or go != "start":
        return _step(request, point, posted, 3)
    try:
        task = services.start_restore(point, posted.destination(posted.cleaned_data), request.user)
    except ActionableError as exc:
        posted.add_error(None, str(exc))
        return _step(request, point, posted, 3)
    audit.record(AuditEntry.Action.OPERATION, point.repository,
                 message=f"restore #{task.pk} of {name} ({point.rp_id}) queued")
    messages.success(request, f"Restore of {name} queued: follow it here.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("jobs:task_detail", args=[task.pk]))
    return redirect("jobs:task_detail", task.pk)


def _carried(request: HttpRequest) -> dict:
    return {k: v for k, v in request.POST.dict().items() if k not in ("csrfmiddlewaretoken", "go", "narrow")}


def _step(request: HttpRequest, point: RestorePoint, form: RestoreForm, step: int) -> HttpResponse:
    """Render one step; htmx gets the step alone (swapped into the page), a plain request the whole page."""
    from jobs.restore import RestoreRefused, in_place_plan

    what, place = form.value_of("what"), form.value_of("place")
    shown_at_2 = set().union(*(form.step_fields({"what": what, "place": p}, 2) for p in dict(form.PLACES)))
    visible = {1: {"what"}, 2: shown_at_2 - {"step", "what"}, 3: set()}[step]
    context = {"form": form, "point": point, "point_name": point_name(point), "step": step, "steps": form.STEPS,
               "title": form.STEPS[step], "visible": visible, "what": what, "place": place,
               "point_disks": [{**d, "size": int(d.get("size") or 0)} for d in point.disks or []]}
    if step == 2 and what == "vm":
        context["original_plan"], context["original_refusal"] = form.plan, ""
        if form.plan is None:
            try:
                context["original_plan"] = in_place_plan(point, {"mode": "original", "confirm": True})
            except RestoreRefused as exc:
                context["original_refusal"] = str(exc)
    if step == 3:
        context["summary"] = _summary(form)
    template = "jobs/_restore_wizard_step.html" if request.htmx else "jobs/restore_form.html"
    return render(request, template, context)


def _summary(form: RestoreForm) -> list[tuple[str, str]]:
    """Every choice of a checked wizard, in words."""
    data = form.cleaned_data
    what = dict(form.WHAT)[data["what"]]
    appliance = str(data.get("appliance") or "Any suitable ready appliance")
    if data["what"] == "images":
        return [("Restore", what), ("Folder on the appliance", data["folder"].strip()), ("Appliance", appliance)]
    if data["what"] == "vm" and data.get("place") == "new_vm":
        return [("Restore", what), ("Where", dict(form.PLACES)["new_vm"]), ("New VM name", data["name"].strip()),
                ("Host", str(data["host"])), ("Datastore", str(data["datastore"])),
                ("Network", str(data.get("network") or "No network")), ("Appliance", appliance)]
    plan = form.plan
    overwritten = "; ".join(f"{d.source} over disk {d.key} ({d.file_name}, {d.capacity / 2**20:,.0f} MiB)"
                            for d in plan.disks)
    rows = [("Restore", what)]
    if data["what"] == "vm":
        rows.append(("Where", dict(form.PLACES)["original"]))
    return [*rows, ("VM overwritten", f"{plan.vm.name} (powered off)"), ("Disks overwritten", overwritten),
            ("Confirmed by typing", data["confirm_name"].strip())]


@require_GET
@role_required(OPERATE)
def restore_host_choices(request: HttpRequest) -> HttpResponse:
    """The wizard's datastore and network lists, narrowed to the chosen host (the htmx swap)."""
    form = RestoreForm(initial={"host": request.GET.get("host", "")})
    return render(request, "jobs/_restore_host_choices.html", {"form": form})
