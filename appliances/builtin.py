"""The built-in appliance of the embedded default: this machine, serving every host of the lab.

It uses the `local` transport (no root needed): the lab gets a VM record for it on one host (so
hot-add works for the datastores that host mounts) and it serves all lab hosts (one-to-many).
"""

from __future__ import annotations

import os
import secrets

from django.db import transaction
from django.db.models import Count

from appliances.models import Appliance
from inventory.models import Connection, Host

NAME = "local-appliance"
HOSTNAME = "vafleet-local"


def _password() -> str:
    return secrets.token_urlsafe(18) + "-Aa1"  # never used to log in: the local transport needs none


def ensure_local_appliance(connection: Connection) -> tuple[Appliance, bool]:
    """The built-in appliance for `connection` (a lab), created as a draft when missing; (appliance, created)."""
    existing = Appliance.objects.filter(name=NAME).first()
    if existing is not None:
        return existing, False
    hosts = connection_hosts(connection)
    if not hosts:
        raise ValueError(f"Connection {connection.name} has no hosts yet: sync it first.")
    host = max(hosts, key=lambda h: (h.shared_count, -h.pk))  # the host that sees the most shared storage
    datastore = host.datastores.filter(vanished_at=None, accessible=True).order_by("-free_bytes").first()
    network = host.networks.filter(vanished_at=None).order_by("name").first()
    if datastore is None or network is None:
        raise ValueError(f"Host {host.name} has no datastore or network for the built-in appliance.")
    with transaction.atomic():
        appliance = Appliance.objects.create(
            name=NAME, hostname=HOSTNAME, connection=connection, host=host, datastore=datastore,
            network=network, addressing=Appliance.Addressing.DHCP, root_password=_password(),
            user_password=_password(), vcpus=max(1, min(8, os.cpu_count() or 2)), memory_mb=1024,
            transport=Appliance.Transport.LOCAL)
        appliance.served_hosts.set(hosts)
    return appliance, True


def connection_hosts(connection: Connection) -> list[Host]:
    return list(Host.objects.filter(connection=connection, vanished_at=None).annotate(shared_count=Count("datastores")))
