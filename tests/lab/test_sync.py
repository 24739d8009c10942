"""`manage.py lab seed` creates the Lab connection and syncs the lab into the database."""

from __future__ import annotations

import re

import pytest
from django.core.management import CommandError, call_command

from inventory.connectors.lab import LabConnector
from inventory.models import Connection, Datastore, Host, Network, VirtualDisk, VirtualMachine
from inventory.sync import sync_connection

pytestmark = pytest.mark.django_db


def test_seed_command_syncs_the_lab(tmp_path, capsys):
    root = tmp_path / "lab"
    call_command("lab", "seed", "--root", str(root), "--vms", "32", "--disk-size", "2M")
    connection = Connection.objects.get(name="Lab")
    assert connection.kind == "lab" and connection.options == {"root": str(root.resolve())}
    assert connection.status == Connection.Status.OK, connection.status_message
    assert connection.product == "VA Fleet lab"
    assert Host.objects.filter(connection=connection).count() == 4
    assert Network.objects.filter(connection=connection).count() == 2
    assert VirtualMachine.objects.filter(connection=connection).count() == 32
    disks = sum(len(vm.disks) for vm in LabConnector(root=root).fetch_inventory().vms)
    assert VirtualDisk.objects.filter(vm__connection=connection).count() == disks
    datastores = Datastore.objects.filter(connection=connection).prefetch_related("hosts")
    assert datastores.count() == 6
    local = [ds for ds in datastores if ds.name.startswith("local-")]
    shared = [ds for ds in datastores if ds.name.startswith("shared-")]
    assert all(ds.hosts.count() == 1 for ds in local)
    assert len({ds.hosts.get().pk for ds in local}) == 4  # each host has its own
    assert all(ds.hosts.count() == 4 for ds in shared) and len(shared) == 2
    web = VirtualMachine.objects.get(connection=connection, name="web-01")
    assert web.disks.get().file_name == "[local-esx-01] web-01/web-01.vmdk"
    assert "32 VMs" in capsys.readouterr().out


def test_reseed_keeps_database_ids(tmp_path):
    root = str(tmp_path / "lab")
    call_command("lab", "seed", "--root", root, "--vms", "4", "--disk-size", "1M")
    ids = dict(VirtualMachine.objects.values_list("moref", "pk"))
    call_command("lab", "seed", "--root", root, "--vms", "5", "--disk-size", "1M")
    after = dict(VirtualMachine.objects.values_list("moref", "pk"))
    assert {m: after[m] for m in ids} == ids and len(after) == 5
    assert Connection.objects.filter(name="Lab").count() == 1


def test_snapshot_shows_as_delta_file_after_sync(tmp_path):
    root = tmp_path / "lab"
    call_command("lab", "seed", "--root", str(root), "--vms", "1", "--disk-size", "1M")
    lab = LabConnector(root=root)
    lab.create_snapshot(lab.find_vm("web-01"), "backup")
    assert sync_connection(Connection.objects.get(name="Lab").pk).ok
    assert VirtualDisk.objects.get(vm__name="web-01").file_name == "[local-esx-01] web-01/web-01-000001.vmdk"


def test_sync_of_a_missing_lab_says_what_to_do(tmp_path):
    connection = Connection.objects.create(name="Gone", kind="lab", options={"root": str(tmp_path / "gone")})
    result = sync_connection(connection.pk)
    connection.refresh_from_db()
    assert not result.ok and connection.status == Connection.Status.ERROR
    assert "does not exist: run `manage.py lab seed" in connection.status_message


def test_command_errors_are_sentences(tmp_path):
    root = str(tmp_path / "lab")
    with pytest.raises(CommandError, match="is not a size"):
        call_command("lab", "seed", "--root", root, "--disk-size", "lots")
    call_command("lab", "seed", "--root", root, "--vms", "1", "--disk-size", "1M", "--no-sync")
    with pytest.raises(CommandError, match="The lab has no VM named or numbered 'db-09'"):
        call_command("lab", "write", "db-09", "--root", root)


def test_write_and_status_commands(tmp_path, capsys):
    root = str(tmp_path / "lab")
    call_command("lab", "seed", "--root", root, "--vms", "2", "--disk-size", "4M", "--no-sync")
    lab = LabConnector(root=root)
    before = lab.disk_digest(lab.find_vm("db-01"), 2001)
    call_command("lab", "write", "db-01", "--percent", "5", "--root", root)
    assert lab.disk_digest(lab.find_vm("db-01"), 2001) != before
    call_command("lab", "status", "--root", root)
    out = capsys.readouterr().out
    assert re.search(r"db-01: 0\.[34] MiB written in \d+ extents", out)
    assert "4 hosts, 6 datastores, 2 networks, 2 VMs" in out
