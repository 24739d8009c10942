"""Each role x each repository API endpoint: viewers read, operators also test, administrators also create,
change and delete. Refused calls change nothing."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs.models import Repository

ROLES = ("anonymous", None, "viewer", "operator", "administrator")
READ = {"anonymous": 401, None: 403, "viewer": 200, "operator": 200, "administrator": 200}
DENIED = {"anonymous": 401, None: 403, "viewer": 403}
ADMIN_ONLY = {**DENIED, "operator": 403}
NEW = {"name": "new-repo", "kind": "local", "path": "/srv/vafleet/new", "passphrase": "New-Passphrase-77"}

MATRIX = [
    ("get", "/api/jobs/repositories/", None, READ),
    ("get", "/api/jobs/repositories/{repo}/", None, READ),
    ("post", "/api/jobs/repositories/", NEW, {**ADMIN_ONLY, "administrator": 201}),
    ("patch", "/api/jobs/repositories/{repo}/", {"path": "/srv/other"}, {**ADMIN_ONLY, "administrator": 200}),
    ("delete", "/api/jobs/repositories/{repo}/", None, {**ADMIN_ONLY, "administrator": 204}),
    # No appliance is ready here: an operator's test runs and answers with the sentence (400).
    ("post", "/api/jobs/repositories/{repo}/test/", {}, {**DENIED, "operator": 400, "administrator": 400}),
]


@pytest.fixture
def repo(db) -> Repository:
    return Repository.objects.create(name="repo", kind="local", path="/srv/vafleet/repo",
                                     passphrase="Stored-Passphrase-1")


def _case_id(case) -> str:
    return f"{case[0].upper()} {case[1]}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: str(r))
@pytest.mark.parametrize("case", MATRIX, ids=_case_id)
def test_role_gets_expected_status(case, role, repo, api_client_for):
    method, url, body, expected = case
    client = APIClient() if role == "anonymous" else api_client_for(role)
    response = getattr(client, method)(url.format(repo=repo.pk), body, format="json")
    assert response.status_code == expected[role], response.content[:300]
    if response.status_code in (401, 403):
        stored = Repository.objects.get(pk=repo.pk)
        assert stored.path == "/srv/vafleet/repo" and stored.last_test is None  # refused: nothing changed or run
        assert not Repository.objects.filter(name="new-repo").exists()
