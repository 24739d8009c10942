"""Admin for support staff: appliances (passwords write-only, deployment and health read-only) and fleet
operations (read-only, with their items).

The appliance form is the portal's, offering every host, datastore and network (no htmx here):
validation.problems still says when one does not fit.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from appliances import services
from appliances.forms import ApplianceForm
from appliances.models import Appliance, FleetOperation, FleetOperationItem
from core.admin import ReadOnlyInline
from core.errors import ActionableError


class ApplianceAdminForm(ApplianceForm):
    narrow = False


@admin.register(Appliance)
class ApplianceAdmin(admin.ModelAdmin):
    form = ApplianceAdminForm
    exclude = ("root_password", "user_password")  # the model fields: only the form's write-only fields handle them
    list_display = ("name", "host", "address", "state", "engine_version", "last_seen", "running_jobs", "vcpus")
    list_filter = ("state", "connection", "addressing", "transport")
    list_select_related = ("host",)
    search_fields = ("name", "hostname", "address", "host__name")
    deployment_fields = ("state", "state_message", "vm_moref", "deploy_handle", "host_key", "host_key_fingerprint",
                         "deployed_at")
    health_fields = ("engine_version", "engine_previous", "last_seen", "health_checked", "health_message",
                     "free_bytes", "load_1m", "running_jobs", "clock_skew_s")
    readonly_fields = (*deployment_fields, *health_fields, "created", "updated")
    fieldsets = (
        (None, {"fields": ("name", "connection", "host", "datastore", "network", "served_hosts")}),
        ("Address", {"fields": ("addressing", "address", "prefix", "gateway", "dns")}),
        ("Access", {"fields": ("hostname", "root_password", "root_password_confirm", "user_name", "user_password",
                               "user_password_confirm", "transport", "port")}),
        ("Size", {"fields": ("vcpus", "memory_mb")}),
        ("Deployment", {"fields": deployment_fields}),
        ("Health", {"fields": (*health_fields, "created", "updated")}),
    )
    actions = ["deploy_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Lists never decrypt passwords: they render even if the secrets key is wrong.
        return super().get_queryset(request).defer("root_password", "user_password")

    @admin.action(description="Deploy")
    def deploy_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            operation = services.start_deploy(list(queryset), user=request.user)
        except ActionableError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{operation} queued.", messages.SUCCESS)


class FleetOperationItemInline(ReadOnlyInline):
    model = FleetOperationItem
    fields = ("appliance_name", "appliance", "state", "phase", "percent", "message", "bytes_sent", "started",
              "finished")
    readonly_fields = fields


@admin.register(FleetOperation)
class FleetOperationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "state", "created_by", "created", "finished", "message")
    list_filter = ("kind", "state")
    list_select_related = ("created_by",)
    search_fields = ("message", "items__appliance_name")
    inlines = [FleetOperationItemInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
