"""Shared fixtures: one user per role, API clients, a channel layer of each xdist worker's own."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytest_plugins = ["tests.plugins.required_suites", "tests.plugins.scaleout"]

ROLES = ("administrator", "operator", "viewer")
PASSWORD = "Correct-Horse-7"


@pytest.fixture(autouse=True)
def channel_layer_prefix(settings, worker_id) -> str:
    """With Redis (the scale-out pass), this xdist worker's own channel-layer prefix: the other worker's
    live updates must not reach this worker's sockets. Returns the prefix ("" on the embedded layer)."""
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if not backend.startswith("channels_redis"):
        return ""
    prefix = f"vafleet-test-{worker_id}"
    config = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": prefix}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": config}}
    return prefix


@pytest.fixture
def make_user(db, django_user_model):
    def make(role: str | None, username: str | None = None):
        user = django_user_model.objects.create_user(username or f"{role or 'nobody'}-user", password=PASSWORD)
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def admin_user_(make_user):
    return make_user("administrator")


@pytest.fixture
def operator_user(make_user):
    return make_user("operator")


@pytest.fixture
def viewer_user(make_user):
    return make_user("viewer")


@pytest.fixture
def api_client_for(make_user):
    """APIClient authenticated with a token for a new user of the given role."""

    def make(role: str | None):
        user = make_user(role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        client.user = user
        return client

    return make


def pytest_collection_modifyitems(items) -> None:
    """Every transactional test restores the migrated data (role groups, schedules) when it ends.

    Mixing transactional tests with and without serialized rollback on one worker breaks: a plain
    flush re-creates content types under new ids, which the next serialized restore then collides
    with. So all of them serialize.
    """
    for item in items:
        marker = item.get_closest_marker("django_db")
        transactional = "transactional_db" in getattr(item, "fixturenames", ()) or (
            marker is not None and marker.kwargs.get("transaction"))
        if transactional and not (marker is not None and marker.kwargs.get("serialized_rollback")):
            kwargs = dict(marker.kwargs) if marker is not None else {}
            item.add_marker(pytest.mark.django_db(**{**kwargs, "transaction": True, "serialized_rollback": True}))
