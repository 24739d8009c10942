"""Connector plugins: a registry from a short name to a Connector class.

Adding a hypervisor type is one module and one line here. Modules are imported on use,
so a missing optional library fails only that plugin, with a clear error.
"""

from __future__ import annotations

from importlib import import_module

from inventory.connectors.base import ConnectionParams, Connector, ConnectorError

REGISTRY: dict[str, str] = {
    "vsphere": "inventory.connectors.vsphere:VSphereConnector",
    "lab": "inventory.connectors.lab:LabConnector",
}

LABELS = {"vsphere": "VMware vCenter / ESXi", "lab": "Lab (local demo hypervisor)"}


def connector_class(kind: str) -> type[Connector]:
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise ConnectorError(f"Unknown connection type {kind!r}; known types: {', '.join(REGISTRY)}.") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConnectorError(f"The {kind} connector cannot load: {exc}.") from exc
    return getattr(module, class_name)


def connector_for(connection) -> Connector:
    """A connector for a Connection model instance."""
    from django.conf import settings

    params = ConnectionParams(
        host=connection.host,
        port=connection.port,
        username=connection.username,
        password=connection.password or "",
        tls_verify=connection.tls_verify,
        tls_thumbprint=connection.tls_thumbprint,
        timeout=settings.VAFLEET_CONNECT_TIMEOUT,
        options=dict(connection.options or {}),
    )
    return connector_class(connection.kind)(params)


__all__ = ["REGISTRY", "LABELS", "Connector", "ConnectionParams", "ConnectorError", "connector_class", "connector_for"]
