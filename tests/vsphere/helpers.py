"""Shapes and small helpers shared by the simulator tests."""

from __future__ import annotations

from inventory.connectors.base import ConnectionParams
from inventory.models import Connection
from tests.harness import vcsim

# At least 4 hosts / 30 VMs; shared and host-local datastores; standard and distributed port groups.
STANDARD = vcsim.Shape(clusters=1, cluster_hosts=3, standalone_hosts=1, vms=32, shared_datastores=2,
                       standard_portgroups=2, distributed_portgroups=2, folders=2)
LARGE = vcsim.Shape(clusters=2, cluster_hosts=9, standalone_hosts=2, vms=500)  # 20 hosts


def params_for(simulator: vcsim.Simulator, **overrides) -> ConnectionParams:
    return ConnectionParams(**{"timeout": 10.0, **simulator.connection_fields(**overrides)})


def connection_for(simulator: vcsim.Simulator, name: str = "vcsim", **overrides) -> Connection:
    return Connection.objects.create(name=name, kind="vsphere", **simulator.connection_fields(**overrides))
