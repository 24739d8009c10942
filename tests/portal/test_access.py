"""Each role against each portal page and action: viewers see, operators also test and sync,
administrators also change connections; the server refuses what the buttons hide."""

from __future__ import annotations

import pytest
from django.test import Client

from core.models import AuditEntry
from inventory.models import Connection
from tests.conftest import PASSWORD

ROLES = (None, "viewer", "operator", "administrator")


def pages(lab) -> list[str]:
    c = lab.connection.pk
    return [
        "/",
        "/audit/",
        "/inventory/connections/",
        f"/inventory/connections/{c}/",
        f"/inventory/connections/{c}/status/",
        "/inventory/hosts/",
        f"/inventory/hosts/{lab.hosts[0].pk}/",
        "/inventory/datastores/",
        f"/inventory/datastores/{lab.shared.pk}/",
        "/inventory/networks/",
        "/inventory/vms/",
        f"/inventory/vms/{lab.vms[0].pk}/",
    ]


def admin_pages(lab) -> list[str]:
    c = lab.connection.pk
    return ["/inventory/connections/add/", f"/inventory/connections/{c}/edit/", f"/inventory/connections/{c}/delete/"]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_is_visible_to_every_role(portal_client, lab, role):
    client = portal_client(role)
    for url in pages(lab):
        response = client.get(url)
        if role is None:
            assert response.status_code == 403, url
            assert "ask an administrator to give you" in response.content.decode().lower()
        else:
            assert response.status_code == 200, url


def test_anonymous_users_are_sent_to_the_login_page(lab):
    client = Client()
    for url in pages(lab) + admin_pages(lab):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url


def test_anonymous_htmx_requests_reload_into_the_login_page(lab):
    response = Client().get("/inventory/vms/", headers={"HX-Request": "true", "HX-Target": "results"})
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/?next=")


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("operator", False), ("administrator", True)])
def test_configuration_pages_are_for_administrators(portal_client, lab, role, allowed):
    client = portal_client(role)
    for url in admin_pages(lab):
        response = client.get(url)
        assert response.status_code == (200 if allowed else 403), url
        if not allowed:
            assert "Only administrators can change the configuration" in response.content.decode()


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("operator", True), ("administrator", True)])
def test_sync_is_for_operators(portal_client, lab, role, allowed):
    client = portal_client(role)
    response = client.post(f"/inventory/connections/{lab.connection.pk}/sync/")
    lab.connection.refresh_from_db()
    if allowed:
        assert response.status_code == 302
        assert lab.connection.status == Connection.Status.SYNCING
    else:
        assert response.status_code == 403
        assert "ask an administrator for the operator role" in response.content.decode()
        assert lab.connection.status == Connection.Status.OK


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("operator", True), ("administrator", True)])
def test_test_is_for_operators(portal_client, lab, role, allowed):
    client = portal_client(role)
    response = client.post(f"/inventory/connections/{lab.connection.pk}/test/", headers={"HX-Request": "true"})
    if allowed:
        assert response.status_code == 200
        assert "Cannot reach" in response.content.decode()  # nothing listens on the lab connection's port
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_changes_are_refused_below_administrator(portal_client, lab, role):
    client = portal_client(role)
    c = lab.connection.pk
    before = AuditEntry.objects.filter(action__in=["create", "update", "delete"]).count()
    assert client.post("/inventory/connections/add/", {"name": "x", "kind": "lab"}).status_code == 403
    assert client.post(f"/inventory/connections/{c}/edit/", {"name": "renamed"}).status_code == 403
    assert client.post(f"/inventory/connections/{c}/delete/").status_code == 403
    assert client.post(f"/inventory/connections/{c}/trust/", {"thumbprint": "AA" * 32}).status_code == 403
    lab.connection.refresh_from_db()
    assert lab.connection.name == "Lab A"
    assert lab.connection.tls_thumbprint == ""
    assert AuditEntry.objects.filter(action__in=["create", "update", "delete"]).count() == before


@pytest.mark.parametrize("role,buttons", [
    ("viewer", set()),
    ("operator", {"Test", "Sync now"}),
    ("administrator", {"Test", "Sync now", "Edit", "Delete"}),
])
def test_buttons_show_only_what_the_role_may_do(portal_client, lab, role, buttons):
    client = portal_client(role)
    html = client.get(f"/inventory/connections/{lab.connection.pk}/").content.decode()
    shown = {label for label in ("Test", "Sync now", "Edit", "Delete") if f"</i> {label}</" in html}
    assert shown == buttons
    listing = client.get("/inventory/connections/").content.decode()
    assert ("Add connection" in listing) == (role == "administrator")


def test_logout_is_a_post(portal_client, lab):
    client = portal_client("viewer")
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_a_wrong_password_says_so_on_the_login_page(make_user):
    user = make_user("viewer")
    response = Client().post("/login/", {"username": user.username, "password": "not-it"})
    assert response.status_code == 200
    assert "Check the user name and password, then try again." in response.content.decode()
    assert AuditEntry.objects.filter(action="login_failed").exists()


def test_login_leads_to_the_page_asked_for(make_user):
    user = make_user("viewer")
    response = Client().post("/login/?next=/inventory/vms/", {"username": user.username, "password": PASSWORD,
                                                              "next": "/inventory/vms/"})
    assert response.status_code == 302 and response["Location"] == "/inventory/vms/"


def test_a_refused_htmx_request_gets_a_fragment_with_the_sentence(portal_client, lab):
    response = portal_client("viewer").post(
        f"/inventory/connections/{lab.connection.pk}/sync/", headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 403
    assert "<html" not in html and "Only operators and administrators can do this" in html


@pytest.mark.parametrize("role,shown", [("viewer", False), ("operator", True), ("administrator", True)])
def test_the_connection_list_offers_sync_to_operators(portal_client, lab, role, shown):
    html = portal_client(role).get("/inventory/connections/").content.decode()
    assert (f'action="/inventory/connections/{lab.connection.pk}/sync/"' in html) == shown
