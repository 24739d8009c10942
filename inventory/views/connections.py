"""Portal pages of hypervisor connections: list, add/edit/delete, test, certificate trust and sync.

Viewers see, operators also test and sync, administrators also change the configuration.
Every change goes through a model save, so the audit log records it.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.models import AuditEntry
from core.rbac import ADMINISTER, OPERATE, VIEW
from core.secrets import SecretUnreadable
from core.views import role_required
from inventory import services
from inventory.connectors import LABELS
from inventory.connectors.base import CertificateMismatch, ConnectorError
from inventory.filtersets import ConnectionFilterSet
from inventory.forms import ConnectionForm, normalize_thumbprint
from inventory.models import Connection, Datastore, Host, Network, VirtualMachine
from inventory.tasks import request_sync
from inventory.views.listing import ListSpec, count_of, render_list

log = logging.getLogger(__name__)

# Connections load without their password: it is decrypted only where a connector needs it.
SHOWN = Connection.objects.defer("password")


CONNECTIONS = ListSpec(
    template="inventory/connection_list.html",
    rows_template="inventory/_connection_rows.html",
    filterset_class=ConnectionFilterSet,
    sorts={
        "name": ("name",),
        "kind": ("kind", "name"),
        "host": ("host", "name"),
        "status": ("status", "name"),
        "synced": ("last_sync_finished",),
        "vms": ("vm_count",),
    },
)


@role_required(VIEW)
def connection_list(request: HttpRequest) -> HttpResponse:
    present = {"vanished_at__isnull": True}
    connections = SHOWN.annotate(
        host_count=count_of(Host, "connection", **present), vm_count=count_of(VirtualMachine, "connection", **present)
    )
    return render_list(
        request, CONNECTIONS, connections, statuses=Connection.Status.choices, kinds=list(LABELS.items())
    )


@role_required(VIEW)
def connection_detail(request: HttpRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(SHOWN, pk=pk)
    present = {"connection": connection, "vanished_at__isnull": True}
    counts = [
        ("Hosts", Host.objects.filter(**present).count(), "inventory:host_list"),
        ("Datastores", Datastore.objects.filter(**present).count(), "inventory:datastore_list"),
        ("Networks", Network.objects.filter(**present).count(), "inventory:network_list"),
        ("VMs", VirtualMachine.objects.filter(**present).count(), "inventory:vm_list"),
    ]
    history = AuditEntry.objects.filter(object_type=Connection._meta.label, object_id=str(connection.pk))[:10]
    return render(
        request, "inventory/connection_detail.html", {"connection": connection, "counts": counts, "history": history}
    )


@role_required(ADMINISTER)
def connection_add(request: HttpRequest) -> HttpResponse:
    form = ConnectionForm(request.POST or None, initial={"kind": request.GET.get("kind", "vsphere")})
    if request.method == "POST" and form.is_valid():
        connection = form.save()
        messages.success(request, f"Connection {connection.name} added. Test it, then sync its inventory.")
        return redirect(connection)
    return render(request, "inventory/connection_form.html", {"form": form})


@role_required(ADMINISTER)
def connection_edit(request: HttpRequest, pk: int) -> HttpResponse:
    # deferred: this page must work when the stored password cannot be decrypted, to enter it again
    connection = get_object_or_404(SHOWN, pk=pk)
    form = ConnectionForm(request.POST or None, instance=connection)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Connection {connection.name} saved.")
        return redirect(connection)
    return render(request, "inventory/connection_form.html", {"form": form, "connection": connection})


@role_required(ADMINISTER)
def connection_delete(request: HttpRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(SHOWN, pk=pk)
    if request.method == "POST":
        name = connection.name
        connection.delete()
        messages.success(request, f"Connection {name} and its inventory were deleted.")
        return redirect("inventory:connection_list")
    vm_count = VirtualMachine.objects.filter(connection=connection, vanished_at__isnull=True).count()
    return render(request, "inventory/connection_confirm_delete.html", {"connection": connection, "vm_count": vm_count})


@require_POST
@role_required(OPERATE)
def connection_test(request: HttpRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(SHOWN, pk=pk)  # the password is read (and may fail) within the test
    return _test_result(request, connection)


@require_POST
@role_required(ADMINISTER)
def connection_form_test(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """Tests what the add/edit form holds, before it is saved (htmx partial)."""
    instance = get_object_or_404(SHOWN, pk=pk) if pk else None
    form = ConnectionForm(request.POST, instance=instance)
    if not form.is_valid():
        problems = [
            f"{form.fields[name].label}: {error}" if name in form.fields else error
            for name, errors in form.errors.items()
            for error in errors
        ]
        return render(request, "inventory/_connection_test.html", {"ok": False, "error": " ".join(problems)})
    context = _run_test(form.save(commit=False))
    context["unsaved"] = True  # "trust" fills the form's thumbprint field instead of saving
    return render(request, "inventory/_connection_test.html", context)


def _run_test(connection: Connection) -> dict:
    context = {"connection": connection}
    try:
        info = services.test_connection(connection)
        context.update(ok=True, info=info)
    except CertificateMismatch as exc:
        context.update(ok=False, error=str(exc), thumbprint=exc.thumbprint)
    except ConnectorError as exc:
        context.update(ok=False, error=str(exc))
    except SecretUnreadable as exc:
        context.update(ok=False, error=f"{str(exc).capitalize()}.")
    except Exception as exc:  # a bug or an unexpected reply: say so instead of a bare server error
        log.exception("test of connection %s failed", connection)
        context.update(ok=False, error=f"The test failed unexpectedly ({exc}); see the server log for details.")
    return context


def _test_result(request: HttpRequest, connection: Connection) -> HttpResponse:
    """Runs the test and renders its outcome (the partial for htmx, the detail page otherwise)."""
    context = _run_test(connection)
    if request.htmx:
        return render(request, "inventory/_connection_test.html", context)
    if context["ok"]:
        messages.success(request, f"Connected to {context['info'].product}.")
    else:
        messages.error(request, context["error"])
    return redirect(connection)


@require_POST
@role_required(ADMINISTER)
def connection_trust(request: HttpRequest, pk: int) -> HttpResponse:
    """Pins the certificate thumbprint the user confirmed, then tests again with it."""
    connection = get_object_or_404(SHOWN, pk=pk)  # the password is read (and may fail) within the test
    try:
        thumbprint = normalize_thumbprint(request.POST.get("thumbprint", ""))
    except ValidationError as exc:
        thumbprint, problem = "", " ".join(exc.messages)
    else:
        problem = "" if thumbprint else "No thumbprint was sent: test the connection again to see it."
    if problem:
        context = {"connection": connection, "ok": False, "error": problem}
        if request.htmx:
            return render(request, "inventory/_connection_test.html", context, status=400)
        messages.error(request, problem)
        return redirect(connection)
    connection.tls_thumbprint = thumbprint
    connection.save(update_fields=["tls_thumbprint", "updated"])
    if not request.htmx:
        messages.success(request, f"Certificate {thumbprint} is now trusted for {connection.name}.")
    return _test_result(request, connection)


@require_POST
@role_required(OPERATE)
def connection_sync(request: HttpRequest, pk: int) -> HttpResponse:
    connection = get_object_or_404(SHOWN, pk=pk)
    if not request_sync(connection, request.user):
        messages.warning(request, f"A sync of {connection.name} is already running; wait for it to finish.")
    connection.refresh_from_db(fields=["status", "status_message", "last_sync_started", "last_sync_finished"])
    if request.htmx:
        return render(request, "inventory/_connection_status.html", {"connection": connection, "detail": True})
    return redirect(connection)


@role_required(VIEW)
def connection_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The status badge; polled while a sync runs. A finished sync reloads the page so its counts show."""
    connection = get_object_or_404(SHOWN, pk=pk)
    response = render(
        request,
        "inventory/_connection_status.html",
        {"connection": connection, "detail": request.GET.get("detail") == "1"},
    )
    if request.GET.get("polling") and connection.status != Connection.Status.SYNCING:
        response["HX-Refresh"] = "true"
    return response
