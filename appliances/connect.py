"""Open the transport that reaches a deployed Appliance, with the fleet key and its pinned host key."""

from __future__ import annotations

import sys

from appliances import var_dir
from appliances.transports import Transport, TransportError
from appliances.transports.local import LocalTransport

ENGINE_DIR = "vafleet"  # relative to the login's home on every appliance


def python_for(appliance) -> str:
    """The Python that runs the VA-side installer: the server's own on this machine, the image's elsewhere."""
    return sys.executable if appliance.transport == "local" else "python3"


def local_home(appliance) -> str:
    """Home directory of a `local` appliance (the engine lives in <home>/vafleet)."""
    return str(var_dir() / "local-appliances" / appliance.hostname)


def transport_for(appliance, connect_timeout: float | None = None) -> Transport:
    """A transport to the appliance; raises TransportError with a sentence when it cannot connect."""
    if appliance.transport == "local":
        return LocalTransport(local_home(appliance), label=f"appliance {appliance.name} (this machine)")
    if not appliance.address or not appliance.host_key:
        raise TransportError(f"Appliance {appliance.name} has no address or pinned host key yet: deploy it first.")
    from django.conf import settings

    from appliances.injection import fleet_key
    from appliances.transports.ssh import SSHTransport

    timeout = connect_timeout if connect_timeout is not None else settings.VAFLEET_CONNECT_TIMEOUT
    transport = SSHTransport(appliance.address, appliance.port, "root", host_key=appliance.host_key,
                             key=fleet_key(), connect_timeout=timeout)
    transport.label = f"appliance {appliance.name} ({appliance.address})"
    return transport
