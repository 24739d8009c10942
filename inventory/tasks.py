"""Background work of the inventory, run by django-q2 workers."""

from __future__ import annotations

from django.db import transaction

from core.audit import Actor, acting_as


def sync_connection_task(connection_id: int, username: str = "") -> dict:
    from inventory.sync import sync_connection

    with acting_as(Actor(user=_user(username), via="worker")):
        result = sync_connection(connection_id, claimed=True)
    return {"ok": result.ok, "message": result.message, "seconds": result.seconds}


def request_sync(connection, user=None) -> bool:
    """Claim the connection and queue its sync once the transaction commits; False if one is running."""
    from django_q.tasks import async_task

    from inventory.sync import claim

    if not claim(connection.pk):
        return False
    username = getattr(user, "username", "") or ""
    transaction.on_commit(
        lambda: async_task(
            "inventory.tasks.sync_connection_task", connection.pk, username, task_name=f"sync {connection.name}"
        )
    )
    return True


def _user(username: str):
    from django.contrib.auth import get_user_model

    if not username:
        return None
    return get_user_model().objects.filter(username=username).first()
