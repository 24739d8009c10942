"""Admin for support staff: the audit log (read-only), users with their role, API tokens.

Token keys are credentials: the admin shows only their first characters.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from core.models import AuditEntry, ChannelGroupMember, ChannelMessage
from core.rbac import GROUP_ROLES, Role

User = get_user_model()


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """History is never edited: no add, change or delete, even for superusers."""

    list_display = ("timestamp", "username", "action", "object_type", "object_repr", "via", "remote_addr", "message")
    list_filter = ("action", "via", "object_type", "timestamp")
    search_fields = ("username", "object_repr", "object_id", "message", "remote_addr")
    date_hierarchy = "timestamp"
    show_full_result_count = False
    list_per_page = 100
    fields = (
        "timestamp", "user", "username", "remote_addr", "via", "action", "object_type", "object_id", "object_repr",
        "message", "changes_table",
    )
    readonly_fields = fields

    @admin.display(description="Changes")
    def changes_table(self, entry: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry.changes, indent=2, sort_keys=True, default=str))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class RoleUserAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "role", "is_active", "last_login")
    list_filter = ("groups", "is_active", "is_staff", "is_superuser")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Groups fetched once for the page, not once per row.
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Role")
    def role(self, user) -> str:
        if user.is_superuser:
            return Role.ADMINISTRATOR.label
        # From the prefetched groups (role_of would query per row).
        roles = [GROUP_ROLES[group.name] for group in user.groups.all() if group.name in GROUP_ROLES]
        return max(roles, default=Role.NONE).label


class MaskedTokenAdmin(TokenAdmin):
    list_display = ("masked_key", "user", "created")

    @admin.display(description="Key")
    def masked_key(self, token) -> str:
        return f"{token.key[:4]}…"


admin.site.unregister(User)
admin.site.register(User, RoleUserAdmin)
admin.site.unregister(TokenProxy)
admin.site.register(TokenProxy, MaskedTokenAdmin)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the system manages itself: support staff may look, never add or edit."""

    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Child rows shown under their parent, never added, changed or deleted here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ChannelMessage)
class ChannelMessageAdmin(ReadOnlyAdmin):
    """Messages in flight through the embedded channel layer (deleting a stuck one is allowed)."""

    list_display = ("id", "channel", "inbox", "expires")
    search_fields = ("channel", "inbox")
    show_full_result_count = False


@admin.register(ChannelGroupMember)
class ChannelGroupMemberAdmin(ReadOnlyAdmin):
    list_display = ("group", "channel", "expires")
    search_fields = ("group", "channel")
    show_full_result_count = False
