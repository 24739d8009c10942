"""Bulk deployment: one appliance per chosen host, planned from shared choices, all or nothing.

`plan(hosts, choices)` returns one value dict per host (the fields `validation.problems` reads, plus
`served_hosts`); `check(planned, choices)` says what is wrong, by host; `create(planned)` saves them.
The portal's bulk form and `POST /api/appliances/bulk/` both go through these three.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.db import transaction

from appliances.models import Appliance
from appliances.validation import problems
from inventory.models import Datastore, Host, Network


@dataclass
class BulkChoices:
    connection: object  # Connection
    base_name: str
    network_name: str
    root_password: str
    user_password: str
    user_name: str = "vauser"
    datastore: Datastore | None = None  # None: the datastore with the most free space each host mounts
    addressing: str = Appliance.Addressing.DHCP
    first_address: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    dns: str = ""
    vcpus: int = 2
    memory_mb: int = 2048


def short_name(host: Host) -> str:
    """'esx-01.lab.local' -> 'esx-01'."""
    return host.name.split(".")[0].lower()


def plan(hosts, choices: BulkChoices) -> list[dict]:
    """One appliance's values per host (sorted by name); nothing is saved."""
    hosts = sorted(hosts, key=lambda h: h.name)
    addresses = _addresses(choices, len(hosts)) if choices.addressing == Appliance.Addressing.STATIC else []
    planned = []
    for n, host in enumerate(hosts):
        name = f"{choices.base_name}-{short_name(host)}"
        values = {
            "name": name, "hostname": name.lower(), "connection": choices.connection, "host": host,
            "datastore": choices.datastore or largest_datastore(host), "network": _network(host, choices.network_name),
            "addressing": choices.addressing, "address": None, "prefix": None, "gateway": None, "dns": "",
            "root_password": choices.root_password, "user_name": choices.user_name,
            "user_password": choices.user_password, "vcpus": choices.vcpus, "memory_mb": choices.memory_mb,
            "transport": Appliance.Transport.SSH, "served_hosts": [host],
        }
        if choices.addressing == Appliance.Addressing.STATIC:
            values.update(address=addresses[n] if n < len(addresses) else None, prefix=choices.prefix,
                          gateway=choices.gateway or None, dns=choices.dns or "")
        planned.append(values)
    return planned


def largest_datastore(host: Host) -> Datastore | None:
    return (Datastore.objects.filter(hosts=host, vanished_at__isnull=True, accessible=True)
            .order_by("-free_bytes", "name").first())


def _network(host: Host, name: str) -> Network | None:
    return (Network.objects.filter(hosts=host, name=name, vanished_at__isnull=True)
            .order_by("kind", "pk").first())


def _addresses(choices: BulkChoices, count: int) -> list[str]:
    """The next `count` free addresses from the first one, within its network (fewer when it runs out)."""
    try:
        first = ipaddress.IPv4Address(str(choices.first_address or ""))
        network = ipaddress.IPv4Network(f"{first}/{int(choices.prefix)}", strict=False)
    except (TypeError, ValueError):
        return []
    taken = set(Appliance.objects.exclude(address=None).values_list("address", flat=True))
    taken.update(str(g) for g in (choices.gateway,) if g)
    found = []
    candidate = first
    while len(found) < count and candidate in network:
        if candidate not in (network.network_address, network.broadcast_address) and str(candidate) not in taken:
            found.append(str(candidate))
        candidate += 1
    return found


def check(planned: list[dict], choices: BulkChoices) -> dict[str, dict[str, list[str]]]:
    """{host name: {field: [sentence, ...]}} for every planned appliance with a problem ({} = all fine)."""
    found: dict[str, dict[str, list[str]]] = {}
    seen: dict[str, dict[str, str]] = {"name": {}, "hostname": {}, "address": {}}
    for values in planned:
        host = values["host"]
        errors = problems(values)
        if values["network"] is None:
            errors["network"] = [f"Host {host.name} has no port group named {choices.network_name!r}."]
        if values["datastore"] is None:
            errors["datastore"] = [f"Host {host.name} mounts no accessible datastore."]
        if values["addressing"] == Appliance.Addressing.STATIC and values["address"] is None and choices.prefix:
            errors["address"] = [f"No free address is left for it in the range from {choices.first_address}"
                                 f"/{choices.prefix}."]
        for field, by_value in seen.items():
            value = (values[field] or "").lower()
            if value and value in by_value:
                errors.setdefault(field, []).append(f"{values[field]} is planned for host {by_value[value]} too.")
            elif value:
                by_value[value] = host.name
        if errors:
            found[host.name] = errors
    return found


@transaction.atomic
def create(planned: list[dict]) -> list[Appliance]:
    """Save the planned appliances (drafts), each serving the hosts planned for it."""
    created = []
    for values in planned:
        fields = {k: v for k, v in values.items() if k != "served_hosts"}
        appliance = Appliance.objects.create(**fields)
        appliance.served_hosts.set(values["served_hosts"])
        created.append(appliance)
    return created
