"""API tokens from a username and password, and /api/me/."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.models import AuditEntry
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()  # the token throttle counts in the cache
    yield
    cache.clear()


def test_token_for_good_credentials_works_for_later_calls(make_user):
    user = make_user("viewer")
    response = APIClient().post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    assert Token.objects.get(user=user).key == key
    again = APIClient().post("/api/token/", {"username": user.username, "password": PASSWORD})  # form-encoded too
    assert again.json()["token"] == key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/me/").json()["username"] == user.username


def test_wrong_password_gets_a_sentence_and_is_audited(make_user):
    user = make_user("viewer")
    response = APIClient().post("/api/token/", {"username": user.username, "password": "nope"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "Wrong username or password; check both and try again."
    assert not Token.objects.filter(user=user).exists()
    failed = AuditEntry.objects.get(action=AuditEntry.Action.LOGIN_FAILED)
    assert failed.remote_addr == "127.0.0.1"
    assert "nope" not in str(failed.changes) + failed.message


def test_missing_fields_are_named(db):
    response = APIClient().post("/api/token/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"username", "password"}


def test_inactive_user_gets_no_token(make_user):
    user = make_user("administrator")
    user.is_active = False
    user.save()
    response = APIClient().post("/api/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert response.status_code == 400


def test_password_guessing_is_throttled(make_user):
    user = make_user("viewer")
    client = APIClient()
    statuses = [
        client.post("/api/token/", {"username": user.username, "password": f"guess-{n}"}).status_code
        for n in range(31)
    ]
    assert statuses[:30] == [400] * 30
    assert statuses[30] == 429


@pytest.mark.parametrize(
    ("role", "label", "operate", "administer"),
    [
        (None, "none", False, False),
        ("viewer", "viewer", False, False),
        ("operator", "operator", True, False),
        ("administrator", "administrator", True, True),
    ],
)
def test_me_reports_role(api_client_for, role, label, operate, administer):
    body = api_client_for(role).get("/api/me/").json()
    assert (body["role"], body["can_operate"], body["can_administer"]) == (label, operate, administer)
    assert "password" not in body


def test_me_for_superuser_is_administrator(django_user_model):
    user = django_user_model.objects.create_superuser("root", password=PASSWORD)
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/me/").json()["role"] == "administrator"
