"""OpenAPI schema and browsable docs: generated without warnings, served with local assets only."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from django.conf import settings
from rest_framework.test import APIClient


def test_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # A fresh process: drf-spectacular reports each warning once per process, so earlier tests could hide one.
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(out)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/me/", "/api/token/", "/api/audit/", "/api/inventory/connections/",
        "/api/inventory/connections/{id}/test/", "/api/inventory/connections/{id}/sync/", "/api/inventory/vms/{id}/",
        "/api/appliances/", "/api/appliances/{id}/deploy/", "/api/appliances/{id}/redeploy/",
        "/api/appliances/{id}/check/", "/api/appliances/bulk/", "/api/appliances/upgrade/",
        "/api/appliances/protection/", "/api/appliances/operations/", "/api/appliances/operations/{id}/",
        "/api/jobs/jobs/", "/api/jobs/jobs/{id}/", "/api/jobs/jobs/{id}/vms/", "/api/jobs/jobs/{id}/run/",
        "/api/jobs/runs/", "/api/jobs/runs/{id}/", "/api/jobs/runs/{id}/cancel/", "/api/jobs/tasks/",
        "/api/jobs/tasks/{id}/", "/api/jobs/tasks/{id}/cancel/", "/api/jobs/tasks/{id}/events/",
        "/api/jobs/restore-points/", "/api/jobs/restore-points/{id}/", "/api/jobs/restore-points/{id}/restore/",
    ):
        assert path in paths, path


def test_password_is_write_only_in_schema(db):
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    components = schema["components"]["schemas"]
    assert "password" not in components["Connection"]["properties"]
    assert components["ConnectionRequest"]["properties"]["password"]["writeOnly"] is True
    for secret in ("root_password", "user_password"):
        assert secret not in components["Appliance"]["properties"]
        assert components["ApplianceRequest"]["properties"][secret]["writeOnly"] is True
    assert {"q", "search", "ordering", "limit", "offset", "power_state", "datastore"} <= {
        p["name"] for p in schema["paths"]["/api/inventory/vms/"]["get"]["parameters"]
    }


def test_docs_page_uses_local_assets_only(db):
    client = APIClient()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} is not served by this server (the docs must work offline)"
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"".join(response.streaming_content if response.streaming else [response.content])
