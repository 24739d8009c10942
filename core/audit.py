"""The audit log: every change (create/update/delete through model signals) and every
operation (sync, later backup/restore) with the acting user and address.

The request's user and address travel in a context variable set by AuditContextMiddleware;
workers and management commands set it with `acting_as`.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import models

from core.secrets import EncryptedTextField


@dataclass(frozen=True)
class Actor:
    user: object = None
    remote_addr: str | None = None
    via: str = ""


_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("vafleet_actor", default=Actor(via="system"))


def current_actor() -> Actor:
    return _actor.get()


@contextmanager
def acting_as(actor: Actor):
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def set_actor(actor: Actor):
    return _actor.set(actor)


def reset_actor(token) -> None:
    _actor.reset(token)


def record(action: str, obj=None, *, message: str = "", changes: dict | None = None, actor: Actor | None = None):
    from core.models import AuditEntry

    actor = actor or current_actor()
    user = actor.user
    if hasattr(user, "_user"):  # resolve the middleware's lazy user
        user = user._user()
    if not getattr(user, "is_authenticated", False):
        user = None
    return AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", "") or "",
        remote_addr=actor.remote_addr,
        via=actor.via,
        action=action,
        object_type=obj._meta.label if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        message=message[:500],
        changes=changes or {},
    )


def field_values(instance: models.Model) -> dict:
    """Audit-safe values of concrete fields; secrets appear only as 'changed'."""
    values = {}
    for field in instance._meta.concrete_fields:
        if isinstance(field, EncryptedTextField):
            values[field.name] = "<secret>" if getattr(instance, field.attname) else ""
            continue
        value = getattr(instance, field.attname)
        values[field.name] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
    return values


def diff(before: dict, after: dict) -> dict:
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
