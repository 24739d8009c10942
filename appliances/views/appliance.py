"""One appliance: its form (administrators), its page, and its actions (operators deploy, redeploy, check).

Passwords never reach a page: the form does not render them back and the detail page says "set".
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from appliances import services
from appliances.forms import ApplianceForm
from appliances.models import Appliance
from appliances.views.fleet import recent_operations, started
from core.errors import ActionableError
from core.rbac import ADMINISTER, OPERATE, VIEW
from core.views import role_required
from inventory.models import Host, VirtualMachine

# The protection table is computed per VM: one page of VMs at a time.
PROTECTION_PAGE_SIZE = 25
# Detail pages load without the encrypted passwords.
SHOWN = Appliance.objects.defer("root_password", "user_password")


@role_required(VIEW)
def appliance_detail(request: HttpRequest, pk: int) -> HttpResponse:
    appliance = get_object_or_404(
        SHOWN.select_related("connection", "host", "datastore", "network").prefetch_related(
            Prefetch("served_hosts", queryset=Host.objects.order_by("name"))
        ),
        pk=pk,
    )
    stored = Appliance.objects.filter(pk=pk).values("root_password", "user_password").get()  # raw: no decryption
    vms = VirtualMachine.objects.filter(host__in=appliance.served_hosts.all(), vanished_at__isnull=True)
    page = Paginator(vms.select_related("host").order_by("name"), PROTECTION_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    protection = []
    if appliance.deployed:  # one set of queries for the whole page
        options = services.protection_map(page.object_list)
        protection = [(vm, next((o for o in options[vm.pk] if o.appliance.pk == appliance.pk), None))
                      for vm in page.object_list]
    context = {
        "appliance": appliance,
        "root_password_set": bool(stored["root_password"]),
        "user_password_set": bool(stored["user_password"]),
        "page": page,
        "protection": protection,
        "operations": recent_operations(appliance),
    }
    return render(request, "appliances/detail.html", context)


@role_required(ADMINISTER)
def appliance_add(request: HttpRequest) -> HttpResponse:
    initial = {name: request.GET[name] for name in ("connection", "host") if request.GET.get(name)}
    form = ApplianceForm(request.POST or None, initial=initial)
    return _save(request, form)


@role_required(ADMINISTER)
def appliance_edit(request: HttpRequest, pk: int) -> HttpResponse:
    appliance = get_object_or_404(Appliance, pk=pk)
    form = ApplianceForm(request.POST or None, instance=appliance)
    return _save(request, form)


def _save(request: HttpRequest, form: ApplianceForm) -> HttpResponse:
    """Save keeps a draft; "Save and deploy" also queues its deployment."""
    if request.method == "POST" and form.is_valid():
        appliance = form.save()
        if "deploy" not in request.POST:
            messages.success(request, f"Appliance {appliance.name} saved. Deploy it when you are ready.")
            return redirect(appliance)
        return started(request, lambda: services.start_deploy([appliance], user=request.user),
                       fallback=appliance.get_absolute_url())
    appliance = form.instance if form.instance.pk else None
    return render(request, "appliances/form.html", {"form": form, "appliance": appliance})


@require_GET
@role_required(ADMINISTER)
def appliance_placement(request: HttpRequest) -> HttpResponse:
    """The host, datastore, network and served-hosts selects for the chosen connection and host (htmx)."""
    initial = {name: request.GET.get(name) for name in ("connection", "host", "datastore", "network")}
    served = request.GET.getlist("served_hosts")
    if served != [request.GET.get("previous_host")]:  # the old host alone follows the new one (one-to-one)
        initial["served_hosts"] = served
    form = ApplianceForm(initial=initial)
    return render(request, "appliances/_placement.html", {"form": form})


@require_POST
@role_required(OPERATE)
def appliance_deploy(request: HttpRequest, pk: int) -> HttpResponse:
    appliance = get_object_or_404(SHOWN, pk=pk)
    return started(request, lambda: services.start_deploy([appliance], user=request.user),
                   fallback=appliance.get_absolute_url())


@require_POST
@role_required(OPERATE)
def appliance_redeploy(request: HttpRequest, pk: int) -> HttpResponse:
    appliance = get_object_or_404(SHOWN, pk=pk)
    return started(request, lambda: services.start_redeploy(appliance, user=request.user),
                   fallback=appliance.get_absolute_url())


@require_POST
@role_required(OPERATE)
def appliance_check(request: HttpRequest, pk: int) -> HttpResponse:
    appliance = get_object_or_404(SHOWN, pk=pk)
    return started(request, lambda: services.start_health_round(user=request.user, appliances=[appliance]),
                   fallback=appliance.get_absolute_url())


@role_required(ADMINISTER)
def appliance_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then undeploy and delete; refused with the reason while it still has work."""
    appliance = get_object_or_404(SHOWN.select_related("host"), pk=pk)
    if request.method == "POST":
        try:
            operation = services.start_remove(appliance, user=request.user)
        except ActionableError as exc:  # ApplianceBusy: it still has work, nothing was removed
            messages.error(request, str(exc))
            return redirect(appliance)
        messages.success(request, f"Removal of {appliance.name} queued.")
        return redirect(operation) if operation is not None else redirect("appliances:list")
    return render(request, "appliances/confirm_remove.html", {"appliance": appliance,
                                                              "work": services.work_of(appliance)})
