"""Deploying appliances to several hosts at once (administrators): plan, check all, create all, deploy."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from appliances import bulk, services
from appliances.forms import BulkDeployForm
from core.errors import ActionableError
from core.rbac import ADMINISTER
from core.views import role_required

CHOICE_FIELDS = (
    "connection", "base_name", "network_name", "root_password", "user_password", "user_name", "datastore",
    "addressing", "first_address", "prefix", "gateway", "dns", "vcpus", "memory_mb",
)


def choices_of(data: dict) -> bulk.BulkChoices:
    values = {name: data.get(name) for name in CHOICE_FIELDS}
    values["dns"] = values["dns"] or ""
    return bulk.BulkChoices(**values)


@role_required(ADMINISTER)
def bulk_deploy(request: HttpRequest) -> HttpResponse:
    initial = {"connection": request.GET.get("connection")} if request.GET.get("connection") else {}
    form = BulkDeployForm(request.POST or None, initial=initial)
    context = {"form": form}
    if request.method == "POST" and form.is_valid():
        choices = choices_of(form.cleaned_data)
        planned = bulk.plan(form.cleaned_data["hosts"], choices)
        wrong = bulk.check(planned, choices)
        if not wrong:
            appliances = bulk.create(planned)
            try:
                operation = services.start_deploy(appliances, user=request.user)
            except ActionableError as exc:
                messages.error(request, f"{len(appliances)} appliances were saved as drafts, but: {exc}")
                return redirect("appliances:list")
            messages.success(request, f"{len(appliances)} appliances saved; their deployment is queued.")
            return redirect(operation)
        context.update(planned=planned, wrong=wrong, labels={n: f.label for n, f in form.fields.items()})
    return render(request, "appliances/bulk.html", context)


@require_GET
@role_required(ADMINISTER)
def bulk_placement(request: HttpRequest) -> HttpResponse:
    """The hosts, network and datastore selects for the chosen connection and hosts (htmx)."""
    initial = {name: request.GET.get(name) for name in ("connection", "network_name", "datastore")}
    initial["hosts"] = request.GET.getlist("hosts")
    return render(request, "appliances/_bulk_placement.html", {"form": BulkDeployForm(initial=initial)})
