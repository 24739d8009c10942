"""The fleet page: every appliance with its state and health, recent operations, and fleet-wide actions.

Viewers see; operators upgrade the fleet and check its health now; administrators add appliances.
"""

from __future__ import annotations

import django_filters
from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from appliances import services
from appliances.models import Appliance, FleetOperation
from core.errors import ActionableError
from core.rbac import OPERATE, VIEW
from core.views import role_required
from inventory.filtersets import InventoryFilterSet
from inventory.views.listing import ListSpec, count_of, render_list

RECENT_OPERATIONS = 8


class ApplianceFilterSet(InventoryFilterSet):
    vanished = None
    search_fields = ("name", "hostname", "address", "host__name")
    state = django_filters.ChoiceFilter(choices=Appliance.State.choices)

    class Meta:
        model = Appliance
        fields = ["state", "connection"]


FLEET = ListSpec(
    template="appliances/fleet.html",
    rows_template="appliances/_appliance_rows.html",
    filterset_class=ApplianceFilterSet,
    sorts={
        "name": ("name",),
        "host": ("host__name", "name"),
        "served": ("served_count", "name"),
        "address": ("address", "name"),
        "state": ("state", "name"),
        "engine": ("engine_version", "name"),
        "seen": ("last_seen",),
    },
)


def recent_operations(appliance: Appliance | None = None):
    operations = FleetOperation.objects.all()
    if appliance is not None:  # a subquery: a join here would count only this appliance's items
        operations = operations.filter(pk__in=FleetOperation.objects.filter(items__appliance=appliance).values("pk"))
    return operations.select_related("created_by").annotate(
        item_count=Count("items"), failed_count=Count("items", filter=Q(items__state="failed"))
    )[:RECENT_OPERATIONS]


@role_required(VIEW)
def fleet_list(request: HttpRequest) -> HttpResponse:
    appliances = Appliance.objects.select_related("host").defer("root_password", "user_password").annotate(
        served_count=count_of(Appliance.served_hosts.through, "appliance")
    )
    return render_list(request, FLEET, appliances, states=Appliance.State.choices, operations=recent_operations())


def started(request: HttpRequest, start, fallback: str = "appliances:list") -> HttpResponse:
    """Runs a service's start_* call; shows its operation, or the sentence that says why not."""
    try:
        operation = start()
    except ActionableError as exc:
        messages.error(request, str(exc))
        return redirect(fallback)
    messages.success(request, f"{operation} queued.")
    return redirect(operation)


@require_POST
@role_required(OPERATE)
def fleet_upgrade(request: HttpRequest) -> HttpResponse:
    return started(request, lambda: services.start_upgrade(user=request.user))


@require_POST
@role_required(OPERATE)
def fleet_health(request: HttpRequest) -> HttpResponse:
    return started(request, lambda: services.start_health_round(user=request.user))
