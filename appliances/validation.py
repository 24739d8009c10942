"""Checks of an appliance's configuration before it is deployed, shared by the portal, API and admin.

`problems(values, instance)` returns {field: [sentence, ...]} ({} = fine). `values` maps model field
names to values (model instances for connection, host, datastore and network). Passwords are
checked with Django's password validators plus a character-class rule.
"""

from __future__ import annotations

import ipaddress
import re

from django.contrib.auth.password_validation import (
    CommonPasswordValidator,
    MinimumLengthValidator,
    UserAttributeSimilarityValidator,
)
from django.core.exceptions import ValidationError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$", re.IGNORECASE)
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MIN_PASSWORD = 12
# Space an appliance VM needs on its datastore, by connection kind (the OVF's disk; the lab's tiny VM).
DISK_BYTES = {"vsphere": 8 << 30, "lab": 64 << 20}
LIMITS = {"vcpus": (1, 64), "memory_mb": (512, 262144)}


class _Person:
    """What UserAttributeSimilarityValidator compares a password with."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def password_problems(password: str, *, who: str, **context: str) -> list[str]:
    """Sentences on why `password` is too weak for `who` ('root', 'the non-root user')."""
    if not password:
        return [f"Enter a password for {who}."]
    found = []
    validators = [MinimumLengthValidator(MIN_PASSWORD), CommonPasswordValidator(),
                  UserAttributeSimilarityValidator(user_attributes=tuple(context))]
    for validator in validators:
        try:
            validator.validate(password, _Person(**context))
        except ValidationError as exc:
            found.extend(exc.messages)
    classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    if classes < 3:
        found.append("Use at least three of: lower-case letters, capitals, digits, symbols.")
    return [f"Password for {who}: {m}" for m in found]


def dns_servers(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\s]+", text or "") if part.strip()]


def problems(values: dict, instance=None) -> dict[str, list[str]]:
    """Every problem of this configuration, by field; an empty dict means it may be deployed."""
    from appliances.models import Appliance

    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    others = Appliance.objects.exclude(pk=getattr(instance, "pk", None))
    name = values.get("name") or ""
    if not NAME_RE.match(name):
        add("name", "Use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    elif others.filter(name__iexact=name).exists():
        add("name", f"An appliance named {name!r} already exists.")
    hostname = values.get("hostname") or ""
    if not HOSTNAME_RE.match(hostname):
        add("hostname", "A host name is 1-63 letters, digits and hyphens, not starting or ending with a hyphen.")
    elif others.filter(hostname__iexact=hostname).exists():
        add("hostname", f"Host name {hostname!r} is already used by appliance "
                        f"{others.get(hostname__iexact=hostname).name}.")
    _check_addressing(values, others, add)
    _check_placement(values, add)
    _check_served(values, add)
    for field, (low, high) in LIMITS.items():
        value = values.get(field)
        if value is None or not low <= int(value) <= high:
            add(field, f"Choose between {low} and {high}.")
    user = values.get("user_name") or ""
    if not USER_RE.match(user) or user == "root":
        add("user_name", "Use a lower-case login name (letters, digits, '_' or '-') other than root.")
    for field, who in (("root_password", "root"), ("user_password", "the non-root user")):
        password = values.get(field)
        if password is None and instance is not None and instance.pk:
            continue  # unchanged: kept encrypted
        for message in password_problems(password or "", who=who, username=user, hostname=hostname, name=name):
            add(field, message)
    return errors


def _check_addressing(values: dict, others, add) -> None:
    if values.get("addressing") == "dhcp":
        return
    if values.get("addressing") != "static":
        add("addressing", "Choose static or DHCP.")
        return
    text, prefix = values.get("address") or "", values.get("prefix")
    try:
        address = ipaddress.IPv4Address(str(text))
    except ValueError:
        add("address", f"{text!r} is not an IPv4 address." if text else "Enter the appliance's address.")
        return
    if prefix is None or not 8 <= int(prefix) <= 30:
        add("prefix", "Enter the network prefix length (8-30), e.g. 24.")
        return
    network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    if address in (network.network_address, network.broadcast_address):
        add("address", f"{address} is the network or broadcast address of {network}.")
    if address.is_loopback or address.is_multicast or address.is_unspecified:
        add("address", f"{address} cannot be an appliance's address.")
    lab_rule = _lab_address_problem(values, str(address))
    if lab_rule:
        add("address", lab_rule)
    if others.filter(address=str(address)).exists():
        add("address", f"{address} is already the address of appliance {others.get(address=str(address)).name}.")
    gateway = values.get("gateway") or ""
    if gateway:
        try:
            gw = ipaddress.IPv4Address(str(gateway))
        except ValueError:
            add("gateway", f"{gateway!r} is not an IPv4 address.")
        else:
            if gw not in network:
                add("gateway", f"The gateway {gw} is not in the appliance's network {network}.")
            elif gw == address:
                add("gateway", "The gateway cannot be the appliance's own address.")
    for server in dns_servers(values.get("dns") or ""):
        try:
            ipaddress.IPv4Address(server)
        except ValueError:
            add("dns", f"{server!r} is not an IPv4 address.")


def _check_served(values: dict, add) -> None:
    """Served hosts (one-to-one: its own host; one-to-many: several) belong to the appliance's connection."""
    host, served = values.get("host"), values.get("served_hosts")
    if host is None or not served:
        return
    elsewhere = [h.name for h in served if h.connection_id != host.connection_id]
    if elsewhere:
        add("served_hosts", f"Served hosts must be in the appliance's connection: {', '.join(elsewhere)} is not.")
    gone = [h.name for h in served if h.connection_id == host.connection_id and h.vanished]
    if gone:
        add("served_hosts", f"{', '.join(gone)} no longer exists in the inventory: choose other hosts.")


def _lab_address_problem(values: dict, address: str) -> str:
    """Lab appliances reached over SSH live on the lab's own addresses; '' when fine."""
    connection = values.get("connection")
    if connection is None or connection.kind != "lab" or (values.get("transport") or "ssh") != "ssh":
        return ""
    from appliances import labnet
    from appliances.labhost import LabHostError

    try:
        labnet.slot_of(address)
    except LabHostError as exc:
        return str(exc)
    return ""


def _check_placement(values: dict, add) -> None:
    connection, host = values.get("connection"), values.get("host")
    datastore, network = values.get("datastore"), values.get("network")
    if connection is None:
        add("connection", "Choose the connection to deploy through.")
        return
    if host is None:
        add("host", "Choose the host to deploy to.")
        return
    if host.connection_id != connection.pk or host.vanished:
        add("host", f"Host {host.name} is not in connection {connection.name} (any more).")
        return
    if datastore is None:
        add("datastore", "Choose the datastore for the appliance's files.")
    elif not datastore.hosts.filter(pk=host.pk).exists() or datastore.vanished:
        add("datastore", f"Host {host.name} does not mount datastore {datastore.name}: choose one it can see.")
    elif not datastore.accessible:
        add("datastore", f"Datastore {datastore.name} is not accessible now.")
    else:
        need = DISK_BYTES.get(connection.kind, DISK_BYTES["vsphere"])
        if datastore.free_bytes < need:
            add("datastore", f"Datastore {datastore.name} has {datastore.free_bytes / 2**30:.1f} GiB free; an "
                             f"appliance needs {need / 2**30:.1f} GiB.")
    if network is None:
        add("network", "Choose the network (port group) for the appliance.")
    elif not network.hosts.filter(pk=host.pk).exists() or network.vanished:
        add("network", f"Network {network.name} is not available on host {host.name}: choose one it has.")
    transport = values.get("transport") or "ssh"
    if transport == "local" and connection.kind != "lab":
        add("transport", "Only lab appliances can be this machine (local transport); use SSH.")
