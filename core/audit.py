"""The audit log: every change (create/update/delete through model signals) and every
operation (sync, later backup/restore) with the acting user and address.

The request's user and address travel in a context variable set by AuditContextMiddleware;
workers and management commands set it with `acting_as`.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import models

from core.secrets import EncryptedTextField


@dataclass(frozen=True)
class Actor:
    user: object = None
    remote_addr: str | None = None
    via: str = ""


SYSTEM = Actor(via="system")
_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("vafleet_actor", default=None)


def current_actor() -> Actor:
    return _actor.get() or SYSTEM


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


# Models whose primary key is itself a credential (API tokens): logged by owner, never by key.
CREDENTIAL_KEYED = {"authtoken.token"}


def _is_credential(instance: models.Model, field: models.Field) -> bool:
    """A token key, or the login password's hash: changes are logged, values never."""
    label = instance._meta.label_lower
    if field.primary_key and label in CREDENTIAL_KEYED:
        return True
    return field.name == "password" and label == settings.AUTH_USER_MODEL.lower()


def _identity(obj) -> tuple[str, str]:
    if obj._meta.label_lower in CREDENTIAL_KEYED:
        return str(obj.user_id), f"API token of {obj.user}"[:200]
    return str(obj.pk), str(obj)[:200]


def record(action: str, obj=None, *, message: str = "", changes: dict | None = None, actor: Actor | None = None):
    from core.models import AuditEntry

    actor = actor or current_actor()
    user = actor.user
    if hasattr(user, "_user"):  # resolve the middleware's lazy user
        user = user._user()
    if not getattr(user, "is_authenticated", False):
        user = None
    object_id, object_repr = _identity(obj) if obj is not None else ("", "")
    return AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", "") or "",
        remote_addr=actor.remote_addr,
        via=actor.via,
        action=action,
        object_type=obj._meta.label if obj is not None else "",
        object_id=object_id,
        object_repr=object_repr,
        message=message[:500],
        changes=changes or {},
    )


class _Hidden(str):
    """Stored as '<secret>'; compares by the value it hides, so a changed secret still shows as changed."""

    def __new__(cls, secret: str):
        hidden = super().__new__(cls, "<secret>")
        hidden._secret = secret
        return hidden

    def __eq__(self, other) -> bool:
        return isinstance(other, _Hidden) and other._secret == self._secret

    def __ne__(self, other) -> bool:
        return not self == other

    __hash__ = str.__hash__


def field_values(instance: models.Model) -> dict:
    """Audit-safe values of concrete fields; secrets appear only as 'changed'."""
    values = {}
    deferred = instance.get_deferred_fields()
    for field in instance._meta.concrete_fields:
        if isinstance(field, EncryptedTextField) and field.attname in deferred:
            continue  # not loaded, so not being saved: reading it would decrypt for nothing
        if isinstance(field, EncryptedTextField) or _is_credential(instance, field):
            secret = getattr(instance, field.attname)
            values[field.name] = _Hidden(secret) if secret else ""
            continue
        value = getattr(instance, field.attname)
        values[field.name] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
    return values


def diff(before: dict, after: dict) -> dict:
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
