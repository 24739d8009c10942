"""VMware vCenter / ESXi connector (pyvmomi)."""

from inventory.connectors.vsphere.connector import VSphereConnector

__all__ = ["VSphereConnector"]
