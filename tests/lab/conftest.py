"""A small real lab in a temporary folder for each test."""

from __future__ import annotations

import pytest

from inventory.connectors.lab import LabConnector, seed

MIB = 1 << 20


@pytest.fixture
def lab(tmp_path) -> LabConnector:
    """Four VMs with 8 MiB disks: web-01 (local), db-01 (shared NFS, 2 disks), app-01 (shared VMFS), mail-01 (off)."""
    seed(tmp_path / "lab", vms=4, disk_size=8 * MIB)
    return LabConnector(root=tmp_path / "lab")

