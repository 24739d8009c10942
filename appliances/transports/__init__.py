"""Transport registry: a short name to the class that reaches an appliance that way.

Adding a transport is one module and one line here; its optional library is imported only when
that transport is used, so a missing library fails that transport alone with a clear error.
"""

from __future__ import annotations

from importlib import import_module

from appliances.transports.base import (
    AuthenticationError,
    CommandResult,
    CommandTimeoutError,
    HostKeyMismatchError,
    Stream,
    Transport,
    TransportError,
    UnreachableError,
    UploadError,
)

TRANSPORTS: dict[str, str] = {
    "ssh": "appliances.transports.ssh.SSHTransport",
    "local": "appliances.transports.local.LocalTransport",
}

__all__ = ["TRANSPORTS", "AuthenticationError", "CommandResult", "CommandTimeoutError", "HostKeyMismatchError",
           "Stream", "Transport", "TransportError", "UnreachableError", "UploadError", "get_transport",
           "open_transport"]


def get_transport(name: str) -> type[Transport]:
    if name not in TRANSPORTS:
        raise TransportError(f"Unknown transport {name!r}: choose one of {', '.join(sorted(TRANSPORTS))}.")
    module, _, cls = TRANSPORTS[name].rpartition(".")
    try:
        return getattr(import_module(module), cls)
    except ImportError as exc:
        raise TransportError(f"The {name!r} transport needs a library that is not installed ({exc.name}): "
                             "install the server's requirements.") from exc


def open_transport(name: str, **options: object) -> Transport:
    return get_transport(name)(**options)
