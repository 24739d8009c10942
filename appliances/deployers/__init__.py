"""Deployer plugins: a connection kind to the class that deploys appliances through it."""

from __future__ import annotations

from importlib import import_module

from appliances.deployers.base import ApplianceSpec, Deployer, DeployError, Progress, Provisioned
from inventory.connectors.base import ConnectionParams

DEPLOYERS: dict[str, str] = {
    "lab": "appliances.deployers.lab:LabDeployer",
    "vsphere": "appliances.deployers.vsphere:VSphereDeployer",
}

__all__ = ["DEPLOYERS", "ApplianceSpec", "Deployer", "DeployError", "Progress", "Provisioned", "deployer_for"]


def deployer_class(kind: str) -> type[Deployer]:
    if kind not in DEPLOYERS:
        raise DeployError(f"Appliances cannot be deployed through a {kind!r} connection; "
                          f"supported: {', '.join(sorted(DEPLOYERS))}.")
    module, _, name = DEPLOYERS[kind].partition(":")
    return getattr(import_module(module), name)


def deployer_for(connection, params: ConnectionParams | None = None) -> Deployer:
    """The deployer of a Connection model instance."""
    if params is None:
        from inventory.connectors import connector_for

        with connector_for(connection) as connector:
            params = connector.params
    return deployer_class(connection.kind)(params)
