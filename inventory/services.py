"""Inventory operations shared by the portal, the API and the admin."""

from __future__ import annotations

from core import audit
from core.models import AuditEntry
from inventory.connectors import connector_for
from inventory.connectors.records import ServerInfo
from inventory.models import Connection


def test_connection(connection: Connection) -> ServerInfo:
    """Connect and log in (bounded by VAFLEET_CONNECT_TIMEOUT); raises ConnectorError with a sentence."""
    with connector_for(connection) as connector:
        info = connector.test()
    audit.record(AuditEntry.Action.OPERATION, connection if connection.pk else None,
                 message=f"test connection: {info.product}")
    return info
