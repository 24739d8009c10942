"""Shared fixtures of the jobs tests: a seeded lab synced as "Lab" with the built-in local appliance
deployed (no root needed), and a local-folder repository."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from inventory.connectors.lab import seed
from inventory.models import Connection
from inventory.sync import sync_connection
from jobs.models import BackupJob, Repository
from tests.appliances.conftest import make_changed_bundle  # noqa: F401 - a fixture the fault tests use

PASSPHRASE = "Repo-Passphrase-1"


@pytest.fixture
def lab(tmp_path, transactional_db):
    seed(tmp_path / "lab", vms=6, disk_size=4 << 20)
    connection = Connection.objects.create(name="Lab", kind="lab", options={"root": str(tmp_path / "lab")})
    assert sync_connection(connection.pk).ok
    call_command("fleet", "local", "--connection", "Lab")
    return connection


@pytest.fixture
def repository(tmp_path, lab):
    return Repository.objects.create(name="local repo", kind="local", path=str(tmp_path / "repo"),
                                     passphrase=PASSPHRASE, chunk_size=1 << 20)


def job_for(repository, vms, **fields) -> BackupJob:
    job = BackupJob.objects.create(name=fields.pop("name", "nightly"), repository=repository, **fields)
    job.vms.set(vms)
    return job
