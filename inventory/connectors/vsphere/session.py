"""Reaching a vCenter or ESXi: bounded connect, certificate trust, login, errors as sentences."""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from inventory.connectors.base import (
    AuthenticationFailed,
    CertificateMismatch,
    ConnectionParams,
    ConnectorError,
    Unreachable,
    UntrustedCertificate,
)


def address(params: ConnectionParams) -> str:
    host = f"[{params.host}]" if ":" in params.host else params.host
    return f"{host}:{params.port}"


def format_thumbprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def normalize_thumbprint(value: str) -> str:
    """Accept 'aa:bb..', 'AA BB..' or 'aabb..' and return the canonical 'AA:BB:..' form."""
    digits = "".join(ch for ch in value.upper() if ch in "0123456789ABCDEF")
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def tls_context(params: ConnectionParams) -> ssl.SSLContext:
    if params.tls_verify:
        return ssl.create_default_context()
    # Trust comes from the pinned thumbprint, checked on every connection.
    return ssl._create_unverified_context()  # noqa: S323


def _timeout_text(seconds: float) -> str:
    return f"{seconds:g} s"


def unreachable(params: ConnectionParams, exc: BaseException) -> Unreachable:
    where = address(params)
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"Cannot resolve the host name {params.host!r}: check the address.")
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(
            f"Cannot reach {where} (connection refused): check the address and port and that vCenter is running."
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return Unreachable(
            f"Cannot reach {where} (timed out after {_timeout_text(params.timeout)}): "
            "check the address and that vCenter is running."
        )
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Unreachable(f"Cannot reach {where} ({reason}): check the address and that vCenter is running.")


def probe_certificate(params: ConnectionParams) -> str:
    """Open one bounded HTTPS request to the API endpoint and return the server's certificate thumbprint.

    Raises Unreachable, UntrustedCertificate or CertificateMismatch with a sentence.
    """
    where = address(params)
    context = tls_context(params)
    conn = http.client.HTTPSConnection(params.host, params.port, timeout=params.timeout, context=context)
    try:
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)
        conn.request("GET", "/sdk/vimServiceVersions.xml")
        conn.getresponse().read()
    except ssl.SSLCertVerificationError as exc:
        thumbprint = _thumbprint_unverified(params)
        raise UntrustedCertificate(
            f"The certificate of {where} is not trusted by this server's certificate authorities "
            f"({exc.verify_message}). Its SHA-256 thumbprint is {thumbprint}: compare it with the one vCenter "
            "shows and pin it to trust this server.",
            thumbprint,
        ) from exc
    except ssl.SSLError as exc:
        raise Unreachable(
            f"The TLS handshake with {where} failed ({exc.reason or exc}): "
            "check that this is the HTTPS port of vCenter."
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise unreachable(params, exc) from exc
    finally:
        conn.close()
    thumbprint = format_thumbprint(der)
    if params.tls_verify:
        return thumbprint
    pinned = normalize_thumbprint(params.tls_thumbprint)
    if not pinned:
        raise UntrustedCertificate(
            f"First connection to {where}: its certificate has the SHA-256 thumbprint {thumbprint}. "
            "Compare it with the one vCenter shows and pin it to trust this server.",
            thumbprint,
        )
    if pinned != thumbprint:
        raise CertificateMismatch(
            f"The certificate of {where} does not match the pinned thumbprint: it now has {thumbprint}, "
            f"the pin is {pinned}. If the certificate was replaced on purpose, pin the new thumbprint; "
            "otherwise something is intercepting the connection.",
            thumbprint,
        )
    return thumbprint


def _thumbprint_unverified(params: ConnectionParams) -> str:
    try:
        with socket.create_connection((params.host, params.port), timeout=params.timeout) as raw:
            context = ssl._create_unverified_context()  # noqa: S323
            with context.wrap_socket(raw, server_hostname=params.host) as tls:
                return format_thumbprint(tls.getpeercert(binary_form=True))
    except OSError:
        return ""


def login(params: ConnectionParams, thumbprint: str) -> vim.ServiceInstance:
    """Log in once the certificate is trusted; every later call is bounded by params.timeout."""
    where = address(params)
    try:
        return SmartConnect(
            host=params.host,
            port=params.port,
            user=params.username,
            pwd=params.password,
            sslContext=tls_context(params),
            thumbprint=None if params.tls_verify else thumbprint.replace(":", ""),
            httpConnectionTimeout=params.timeout,
            connectionPoolTimeout=-1,
        )
    except vim.fault.InvalidLogin as exc:
        raise AuthenticationFailed(
            f"{where} rejected the user name or password: check the credentials of the connection."
        ) from exc
    except vim.fault.HostConnectFault as exc:
        raise Unreachable(
            f"Cannot talk to the vSphere API at {where} ({exc.msg}): check the address and port."
        ) from exc
    except vmodl.MethodFault as exc:
        raise ConnectorError(f"{where} refused the login: {exc.msg or type(exc).__name__}.") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise unreachable(params, exc) from exc
    except Exception as exc:  # pyvmomi raises a bare Exception when the endpoint is not a vSphere API
        raise Unreachable(f"{where} does not answer like vCenter or ESXi ({exc}): check the address and port.") from exc


def logout(si: vim.ServiceInstance | None) -> None:
    if si is None:
        return
    try:
        Disconnect(si)
    except Exception:  # noqa: S110 - the session may already be gone; nothing to clean up then
        pass


def fault_sentence(params: ConnectionParams, action: str, exc: Exception) -> ConnectorError:
    """Turn what a vSphere call raised into a sentence."""
    where = address(params)
    if isinstance(exc, vim.fault.NotAuthenticated):
        return AuthenticationFailed(f"The session with {where} expired while {action}: try again.")
    if isinstance(exc, vim.fault.NoPermission):
        return ConnectorError(
            f"The account lacks the privilege {exc.privilegeId or 'needed'} on {where} for {action}: "
            "grant it in vCenter."
        )
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return ConnectorError(f"{where} no longer has the object needed for {action}: sync the inventory and retry.")
    if isinstance(exc, vmodl.MethodFault):
        return ConnectorError(f"{where} refused {action}: {exc.msg or type(exc).__name__}.")
    if isinstance(exc, OSError | http.client.HTTPException):
        return unreachable(params, exc)
    return ConnectorError(f"{action[:1].upper()}{action[1:]} on {where} failed unexpectedly: {exc}.")
