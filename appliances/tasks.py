"""Background work of the fleet, run by django-q2 workers."""

from __future__ import annotations

from core.audit import Actor, acting_as


def run_operation_task(operation_id: int, username: str = "") -> dict:
    from django.contrib.auth import get_user_model

    from appliances.operations import run_operation

    user = get_user_model().objects.filter(username=username).first() if username else None
    with acting_as(Actor(user=user, via="worker")):
        operation = run_operation(operation_id)
    return {"state": operation.state, "message": operation.message}
