"""Inventory sync: fetch everything from the connector first, then apply it in one transaction.

A failed or interrupted fetch changes nothing; a re-sync keeps database ids (rows are matched
by moref) and marks objects the hypervisor no longer reports as vanished.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from core import audit
from core.models import AuditEntry
from inventory.connectors import ConnectorError, connector_for
from inventory.connectors.records import Inventory
from inventory.consumers import publish_status
from inventory.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    Host,
    Network,
    VirtualDisk,
    VirtualMachine,
)

log = logging.getLogger(__name__)

# A sync still marked running after this long is taken to have crashed.
STALE_SYNC = timedelta(minutes=30)


class SyncAlreadyRunning(ConnectorError):
    code = "sync_running"


@dataclass
class SyncResult:
    ok: bool
    message: str
    seconds: float = 0.0
    round_trips: int = 0
    counts: dict | None = None


def claim(connection_id: int) -> bool:
    """Mark the connection as syncing unless another sync holds it (guarded update)."""
    now = timezone.now()
    free = Connection.objects.filter(pk=connection_id).exclude(
        status=Connection.Status.SYNCING, last_sync_started__gt=now - STALE_SYNC
    )
    claimed = free.update(status=Connection.Status.SYNCING, last_sync_started=now, status_message="") == 1
    if claimed:
        _announce(connection_id)
    return claimed


def _announce(connection_id: int) -> None:
    """Push the connection's new status to open portal pages once the change is committed."""
    transaction.on_commit(lambda: publish_status(connection_id))


def sync_connection(connection_id: int, *, claimed: bool = False) -> SyncResult:
    if not claimed and not claim(connection_id):
        return SyncResult(False, "A sync of this connection is already running.")
    connection = Connection.objects.get(pk=connection_id)
    started = time.monotonic()
    try:
        with connector_for(connection) as connector:
            info = connector.test()
            inventory = connector.fetch_inventory()
        with transaction.atomic():
            counts = apply_inventory(connection, inventory)
    except ConnectorError as exc:
        return _finish(connection, started, ok=False, message=str(exc))
    except Exception as exc:  # a bug or an unexpected reply: keep the inventory, say what happened
        log.exception("sync of %s failed", connection)
        return _finish(
            connection, started, ok=False,
            message=f"Sync failed unexpectedly ({type(exc).__name__}: {exc}); the inventory was left unchanged. "
            "The server log has the details.",
        )
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    result = _finish(
        connection, started, ok=True, message=f"Synced: {summary}.", product=info.product, counts=counts
    )
    result.round_trips = inventory.round_trips
    return result


def _finish(connection: Connection, started: float, *, ok: bool, message: str, product: str = "", counts=None):
    seconds = time.monotonic() - started
    fields = {
        "status": Connection.Status.OK if ok else Connection.Status.ERROR,
        "status_message": message[:500],
        "last_sync_finished": timezone.now(),
        "last_sync_seconds": round(seconds, 3),
    }
    if product:
        fields["product"] = product[:200]
    Connection.objects.filter(pk=connection.pk).update(**fields)
    _announce(connection.pk)
    audit.record(AuditEntry.Action.OPERATION, connection, message=f"sync: {message}")
    return SyncResult(ok, message, seconds, counts=counts)


def apply_inventory(connection: Connection, inv: Inventory) -> dict:
    now = timezone.now()
    dcs = _upsert(Datacenter, connection, now, {r.moref: {"name": r.name} for r in inv.datacenters})
    clusters = _upsert(
        Cluster, connection, now, {r.moref: {"name": r.name, "datacenter_id": dcs[r.datacenter]} for r in inv.clusters}
    )
    hosts = _upsert(
        Host,
        connection,
        now,
        {
            r.moref: {
                "name": r.name,
                "datacenter_id": dcs[r.datacenter],
                "cluster_id": clusters.get(r.cluster) if r.cluster else None,
                "connection_state": r.connection_state,
                "power_state": r.power_state,
                "in_maintenance": r.in_maintenance,
                "product": r.product[:100],
                "cpu_cores": r.cpu_cores,
                "memory_bytes": r.memory_bytes,
            }
            for r in inv.hosts
        },
    )
    datastores = _upsert(
        Datastore,
        connection,
        now,
        {
            r.moref: {
                "name": r.name,
                "datacenter_id": dcs[r.datacenter],
                "type": r.type[:20],
                "url": r.url[:500],
                "capacity_bytes": r.capacity_bytes,
                "free_bytes": r.free_bytes,
                "accessible": r.accessible,
            }
            for r in inv.datastores
        },
    )
    networks = _upsert(
        Network,
        connection,
        now,
        {
            r.moref: {
                "name": r.name,
                "datacenter_id": dcs[r.datacenter],
                "kind": r.kind,
                "switch": r.switch[:255],
                "vlan": str(r.vlan)[:40],
            }
            for r in inv.networks
        },
    )
    vms = _upsert(
        VirtualMachine,
        connection,
        now,
        {
            r.moref: {
                "name": r.name[:255],
                "datacenter_id": dcs[r.datacenter],
                "host_id": hosts.get(r.host) if r.host else None,
                "uuid": r.uuid,
                "power_state": r.power_state,
                "guest_os": r.guest_os[:200],
                "num_cpu": r.num_cpu,
                "memory_mb": r.memory_mb,
                "folder": r.folder[:500],
                "tags": sorted(r.tags),
                "is_template": r.is_template,
                "cbt_enabled": r.cbt_enabled,
                "provisioned_bytes": sum(d.capacity_bytes for d in r.disks),
            }
            for r in inv.vms
        },
    )
    _replace_links(
        Datastore.hosts.through, "datastore", "host", datastores, hosts, {r.moref: r.hosts for r in inv.datastores}
    )
    _replace_links(Network.hosts.through, "network", "host", networks, hosts, {r.moref: r.hosts for r in inv.networks})
    _replace_links(
        VirtualMachine.datastores.through, "virtualmachine", "datastore", vms, datastores,
        {r.moref: r.datastores for r in inv.vms},
    )
    _replace_links(
        VirtualMachine.networks.through, "virtualmachine", "network", vms, networks,
        {r.moref: r.networks for r in inv.vms},
    )
    _sync_disks(inv, vms, datastores, now)
    return {
        "datacenters": len(dcs), "clusters": len(clusters), "hosts": len(hosts), "datastores": len(datastores),
        "networks": len(networks), "VMs": len(vms),
    }


def _upsert(model, connection: Connection, now, wanted: dict[str, dict]) -> dict[str, int]:
    """Create, update (only what changed) and mark vanished; returns moref -> id of wanted rows."""
    existing = {obj.moref: obj for obj in model.objects.filter(connection=connection)}
    fields = sorted({f for values in wanted.values() for f in values})
    to_create, to_update = [], []
    for moref, values in wanted.items():
        obj = existing.get(moref)
        if obj is None:
            to_create.append(model(connection=connection, moref=moref, vanished_at=None, last_seen=now, **values))
            continue
        changed = obj.vanished_at is not None or any(getattr(obj, f) != v for f, v in values.items())
        if changed:
            for f, v in values.items():
                setattr(obj, f, v)
            obj.vanished_at = None
            obj.last_seen = now
            to_update.append(obj)
    model.objects.bulk_create(to_create, batch_size=500)
    if to_update:
        model.objects.bulk_update(to_update, [*fields, "vanished_at", "last_seen"], batch_size=500)
    gone = [obj.pk for moref, obj in existing.items() if moref not in wanted and obj.vanished_at is None]
    for start in range(0, len(gone), 500):
        model.objects.filter(pk__in=gone[start:start + 500]).update(vanished_at=now)
    # ids of created rows: re-read only when something was created (SQLite's bulk_create may not return pks)
    ids = {moref: obj.pk for moref, obj in existing.items() if moref in wanted}
    if to_create:
        ids.update(
            model.objects.filter(connection=connection, moref__in=[o.moref for o in to_create]).values_list(
                "moref", "pk"
            )
        )
    return ids


def _replace_links(through, left: str, right: str, left_ids: dict, right_ids: dict, wanted: dict[str, list[str]]):
    """Make the many-to-many rows of these objects exactly `wanted`, touching only differences."""
    left_col, right_col = f"{left}_id", f"{right}_id"
    want = {
        (left_ids[l_moref], right_ids[r_moref])
        for l_moref, r_morefs in wanted.items()
        for r_moref in r_morefs
        if r_moref in right_ids
    }
    current_rows = through.objects.filter(**{f"{left_col}__in": list(left_ids.values())}).values_list(
        "pk", left_col, right_col
    )
    current = {(l_id, r_id): pk for pk, l_id, r_id in current_rows}
    stale = [pk for pair, pk in current.items() if pair not in want]
    for start in range(0, len(stale), 500):
        through.objects.filter(pk__in=stale[start:start + 500]).delete()
    through.objects.bulk_create(
        [through(**{left_col: l_id, right_col: r_id}) for l_id, r_id in want - current.keys()], batch_size=500
    )


def _sync_disks(inv: Inventory, vm_ids: dict[str, int], datastore_ids: dict[str, int], now) -> None:
    existing = {(d.vm_id, d.key): d for d in VirtualDisk.objects.filter(vm_id__in=list(vm_ids.values()))}
    seen, to_create, to_update = set(), [], []
    fields = ["label", "file_name", "datastore_id", "capacity_bytes", "thin", "cbt_enabled", "disk_mode"]
    for vm in inv.vms:
        vm_id = vm_ids[vm.moref]
        for disk in vm.disks:
            values = asdict(disk)
            values["datastore_id"] = datastore_ids.get(disk.datastore) if disk.datastore else None
            values = {f: values[f] for f in fields}
            seen.add((vm_id, disk.key))
            obj = existing.get((vm_id, disk.key))
            if obj is None:
                to_create.append(VirtualDisk(vm_id=vm_id, key=disk.key, **values))
            elif obj.vanished_at is not None or any(getattr(obj, f) != v for f, v in values.items()):
                for f, v in values.items():
                    setattr(obj, f, v)
                obj.vanished_at = None
                to_update.append(obj)
    VirtualDisk.objects.bulk_create(to_create, batch_size=500)
    if to_update:
        VirtualDisk.objects.bulk_update(to_update, [*fields, "vanished_at"], batch_size=500)
    gone = [d.pk for k, d in existing.items() if k not in seen and d.vanished_at is None]
    for start in range(0, len(gone), 500):
        VirtualDisk.objects.filter(pk__in=gone[start:start + 500]).update(vanished_at=now)
