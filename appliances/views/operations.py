"""A fleet operation's page: one row per appliance, redrawn live over the fleet websocket.

Without JavaScript the page still shows the state as of its loading; a reload shows the latest.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from appliances.models import FleetOperation
from core.rbac import VIEW
from core.views import role_required


@role_required(VIEW)
def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    operation = get_object_or_404(FleetOperation.objects.select_related("created_by"), pk=pk)
    items = operation.items.select_related("appliance").defer("appliance__root_password",
                                                             "appliance__user_password")
    return render(request, "appliances/operation.html", {"operation": operation, "items": items})
