"""Template helpers of the portal: links that keep the list's query string, badges, sizes."""

from __future__ import annotations

from django import template
from django.http import QueryDict
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """The current query string with some parameters replaced (None or "" removes one); starts with '?'."""
    params: QueryDict = context["request"].GET.copy()
    for key, value in changes.items():
        params.pop(key, None)
        if value not in (None, ""):
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def query_without(context, name: str) -> str:
    """The current query string without parameter `name` (and back to the first page)."""
    params: QueryDict = context["request"].GET.copy()
    params.pop(name, None)
    params.pop("page", None)
    return f"?{params.urlencode()}"


@register.simple_tag(takes_context=True)
def sort_link(context, key: str) -> str:
    """Query string that sorts by `key`, flipping the direction when it already sorts by it."""
    current = context.get("sort", "")
    target = f"-{key}" if current == key else key
    return query(context, sort=target, page=None)


@register.simple_tag(takes_context=True)
def sort_mark(context, key: str) -> str:
    current = context.get("sort", "")
    if current == key:
        return "▲"
    if current == f"-{key}":
        return "▼"
    return ""


@register.filter
def mib(value: int | None) -> str:
    """Megabytes (as vSphere reports memory) as a readable size."""
    return filesizeformat((value or 0) * 1024 * 1024)


@register.filter
def percent_used(datastore) -> int:
    if not datastore.capacity_bytes:
        return 0
    return round(100 * (datastore.capacity_bytes - datastore.free_bytes) / datastore.capacity_bytes)


STATUS_COLORS = {
    "ok": "success",
    "error": "danger",
    "syncing": "info",
    "new": "secondary",
    "poweredOn": "success",
    "poweredOff": "secondary",
    "suspended": "warning",
    "connected": "success",
    "disconnected": "danger",
    "notResponding": "danger",
    "create": "success",
    "update": "primary",
    "delete": "danger",
    "login": "secondary",
    "logout": "secondary",
    "login_failed": "warning",
    "operation": "info",
}


@register.filter
def badge_color(value: str) -> str:
    return STATUS_COLORS.get(value, "secondary")


@register.simple_tag(takes_context=True)
def nav_active(context, *prefixes: str) -> str:
    """'active' when the current view's name starts with one of the prefixes (for the navigation)."""
    match = getattr(context.get("request"), "resolver_match", None)
    name = getattr(match, "view_name", "") or ""
    return "active" if any(name.startswith(p) for p in prefixes) else ""


# Bookkeeping fields that make a create entry long without saying anything.
AUDIT_NOISE = {"id", "created", "updated", "last_login", "date_joined", "first_seen", "last_seen"}


@register.filter
def audit_changes(entry) -> list[tuple[str, str, str]]:
    """(field, before, after) to show for an audit entry; credential values never reach the page."""
    rows = []
    for name, change in (entry.changes or {}).items():
        if isinstance(change, list) and len(change) == 2:
            before, after = change
        else:
            before, after = None, change
        if entry.action == "create" and (name in AUDIT_NOISE or after in (None, "", [], {})):
            continue
        if "password" in name or "secret" in name:
            before, after = ("•••" if before else ""), ("•••" if after else "")
        rows.append((name, "" if before is None else str(before), "" if after is None else str(after)))
    return rows
