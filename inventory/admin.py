"""Admin for support staff: connections (password write-only) and the synced inventory (read-only).

Inventory rows come from syncs, so the admin shows them but never adds, edits or deletes them.
Changes to connections go through model saves and so reach the audit log.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import admin as core_admin
from core import audit
from core.models import AuditEntry
from core.secrets import SecretUnreadable
from inventory.connectors import ConnectorError
from inventory.forms import ConnectionForm
from inventory.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    Host,
    Network,
    VirtualDisk,
    VirtualMachine,
)
from inventory.services import test_connection
from inventory.tasks import request_sync


class ReadOnlyAdmin(core_admin.ReadOnlyAdmin):
    """Viewing only: these rows are written by syncs (never deleted here either)."""

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    # The portal's form: the same validation; its password field is write-only (blank keeps the stored one).
    form = ConnectionForm
    exclude = ("password",)  # the model field: only the form's write-only field handles it
    list_display = ("name", "kind", "host", "port", "username", "status", "product", "last_sync_finished")
    list_filter = ("kind", "status", "tls_verify")
    search_fields = ("name", "host", "username", "product")
    readonly_fields = (
        "status", "status_message", "product", "last_sync_started", "last_sync_finished", "last_sync_seconds",
        "created", "updated",
    )
    fieldsets = (
        (None, {"fields": ("name", "kind", "host", "port", "username", "password", "lab_root")}),
        ("TLS", {"fields": ("tls_verify", "tls_thumbprint")}),
        ("Status", {"fields": readonly_fields}),
    )
    actions = ["sync_now", "test_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Lists never decrypt passwords: they render even if the secrets key is wrong.
        return super().get_queryset(request).defer("password")

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for connection in queryset:
            if request_sync(connection, request.user):
                audit.record(AuditEntry.Action.OPERATION, connection, message="sync requested")
                self.message_user(request, f"Sync of {connection.name} queued.", messages.SUCCESS)
            else:
                self.message_user(request, f"A sync of {connection.name} is already running.", messages.WARNING)

    @admin.action(description="Test connection")
    def test_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for connection in queryset:
            try:
                info = test_connection(connection)
            except (ConnectorError, SecretUnreadable) as exc:
                self.message_user(request, f"{connection.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{connection.name}: {info.product} {info.version}", messages.SUCCESS)


@admin.register(Datacenter)
class DatacenterAdmin(ReadOnlyAdmin):
    list_display = ("name", "connection", "moref", "vanished_at")
    list_filter = ("connection",)
    list_select_related = ("connection",)
    search_fields = ("name", "moref")


@admin.register(Cluster)
class ClusterAdmin(ReadOnlyAdmin):
    list_display = ("name", "datacenter", "connection", "moref", "vanished_at")
    list_filter = ("connection",)
    list_select_related = ("connection", "datacenter")
    search_fields = ("name", "moref")


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ("name", "cluster", "datacenter", "connection_state", "power_state", "in_maintenance", "vanished_at")
    list_filter = ("connection", "connection_state", "power_state", "in_maintenance")
    list_select_related = ("connection", "datacenter", "cluster")
    search_fields = ("name", "moref", "product")


@admin.register(Datastore)
class DatastoreAdmin(ReadOnlyAdmin):
    list_display = ("name", "type", "datacenter", "capacity_bytes", "free_bytes", "accessible", "vanished_at")
    list_filter = ("connection", "type", "accessible")
    list_select_related = ("connection", "datacenter")
    search_fields = ("name", "moref", "url")


@admin.register(Network)
class NetworkAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "switch", "vlan", "datacenter", "vanished_at")
    list_filter = ("connection", "kind")
    list_select_related = ("connection", "datacenter")
    search_fields = ("name", "moref", "switch")


class VirtualDiskInline(core_admin.ReadOnlyInline):
    model = VirtualDisk
    fields = ("key", "label", "file_name", "datastore", "capacity_bytes", "thin", "cbt_enabled", "vanished_at")
    readonly_fields = fields


@admin.register(VirtualMachine)
class VirtualMachineAdmin(ReadOnlyAdmin):
    list_display = (
        "name", "power_state", "host", "guest_os", "num_cpu", "memory_mb", "provisioned_bytes", "cbt_enabled",
        "vanished_at",
    )
    list_filter = (
        "connection", "power_state", "is_template", "cbt_enabled", ("vanished_at", admin.EmptyFieldListFilter),
    )
    list_select_related = ("host",)
    search_fields = ("name", "moref", "uuid", "guest_os", "folder")
    raw_id_fields = ("host", "datacenter")
    inlines = [VirtualDiskInline]


@admin.register(VirtualDisk)
class VirtualDiskAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "file_name", "capacity_bytes", "thin", "cbt_enabled", "vanished_at")
    list_filter = ("thin", "cbt_enabled")
    list_select_related = ("vm",)
    search_fields = ("file_name", "vm__name", "label")
