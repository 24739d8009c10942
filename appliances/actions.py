"""What one fleet operation item does to one appliance: deploy, redeploy, remove, upgrade, health.

Each function is `action(appliance, progress, item) -> sentence`; a failure raises an error whose
message is the sentence to show (SENTENCE_ERRORS), and leaves the appliance in a state that says so.
"""

from __future__ import annotations

import shutil
import threading
import time
from functools import lru_cache

from django.conf import settings
from django.utils import timezone

from appliances import live
from appliances.bundle import Bundle, BundleError, build_bundle
from appliances.connect import ENGINE_DIR, local_home, python_for, transport_for
from appliances.deployers import ApplianceSpec, DeployError, Provisioned, deployer_for
from appliances.injection import bootstrap, ensure_engine, install_va_side
from appliances.keys import fingerprint
from appliances.models import Appliance
from appliances.transports import (
    AuthenticationError,
    HostKeyMismatchError,
    Transport,
    TransportError,
    UnreachableError,
)
from appliances.validation import dns_servers
from core.errors import ActionableError

SENTENCE_ERRORS = (ActionableError, TransportError, BundleError)
LOST_CONTACT = (UnreachableError, AuthenticationError, HostKeyMismatchError)


_BUNDLE_LOCK = threading.Lock()


def current_bundle() -> Bundle:
    """The engine bundle of this server's code (built once per code version, then reused from disk)."""
    with _BUNDLE_LOCK:  # items of one operation run in threads: build once
        return _bundle_for(_engine_stamp())


@lru_cache(maxsize=2)
def _bundle_for(stamp: tuple) -> Bundle:
    return build_bundle()


def _engine_stamp() -> tuple:
    from appliances import REPO_DIR

    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in (REPO_DIR / "engines").rglob("*.py")))


def spec_of(appliance: Appliance) -> ApplianceSpec:
    return ApplianceSpec(
        name=appliance.name, hostname=appliance.hostname, addressing=appliance.addressing,
        root_password=appliance.root_password, user_password=appliance.user_password,
        user_name=appliance.user_name,
        address=appliance.address or "" if appliance.addressing == Appliance.Addressing.STATIC else "",
        prefix=appliance.prefix, gateway=appliance.gateway or "", dns=dns_servers(appliance.dns),
        vcpus=appliance.vcpus, memory_mb=appliance.memory_mb, datacenter=appliance.host.datacenter.moref,
        host=appliance.host.moref, datastore=appliance.datastore.moref, network=appliance.network.moref,
        transport=appliance.transport, disk_mib=(appliance.deploy_handle or {}).get("disk_mib"),
    )


def _set_state(appliance: Appliance, state: str, message: str = "", **fields) -> None:
    appliance.state, appliance.state_message = state, message[:500]
    for name, value in fields.items():
        setattr(appliance, name, value)
    appliance.save(update_fields=["state", "state_message", "updated", *fields])
    live.publish_appliance(appliance)


def deploy(appliance: Appliance, progress, item) -> str:
    _set_state(appliance, Appliance.State.DEPLOYING)
    try:
        return _deploy(appliance, progress, item)
    except SENTENCE_ERRORS as exc:
        _set_state(appliance, Appliance.State.FAILED, str(exc))
        raise


def _deploy(appliance: Appliance, progress, item) -> str:
    deployer = deployer_for(appliance.connection)
    if not deployer.supports_transport(appliance.transport):
        raise DeployError(f"{appliance.connection.name} cannot deploy an appliance reached by "
                          f"{appliance.get_transport_display()}: choose SSH.")
    progress("Creating the appliance VM", 2)
    made = deployer.provision(spec_of(appliance), lambda phase, pct: progress(phase, 2 + pct * 0.58))
    keep = {"disk_mib": appliance.deploy_handle.get("disk_mib")} if appliance.deploy_handle.get("disk_mib") else {}
    appliance.vm_moref, appliance.deploy_handle = made.vm_moref, {**keep, **made.handle}
    if made.address:
        appliance.address = made.address
    appliance.port = made.port
    appliance.save(update_fields=["vm_moref", "deploy_handle", "address", "port", "updated"])
    try:
        transport = _first_contact(appliance, made, progress)
        with transport:
            progress("Injecting the engine", 70)
            result = ensure_engine(transport, current_bundle(), ENGINE_DIR, python_for(appliance))
    except BaseException:
        _undo(appliance, deployer)
        raise
    item.bytes_sent = result.bytes_sent
    now = timezone.now()
    _set_state(appliance, Appliance.State.READY, deployed_at=now, last_seen=now, health_checked=now,
               engine_version=result.version, engine_previous=result.previous or "", health_message="")
    where = f" at {appliance.address}" if appliance.address else ""
    return f"Deployed on {appliance.host.name}{where}; engine {result.version}."


def _undo(appliance: Appliance, deployer) -> None:
    """A deployment that failed after the VM was made: remove the VM so nothing half-made stays."""
    try:
        deployer.remove(appliance.vm_moref, appliance.deploy_handle)
    except SENTENCE_ERRORS:
        return  # the VM stays recorded, so a redeploy or remove can try again
    appliance.vm_moref, appliance.host_key, appliance.host_key_fingerprint = "", "", ""
    appliance.save(update_fields=["vm_moref", "host_key", "host_key_fingerprint", "updated"])


def _first_contact(appliance: Appliance, made: Provisioned, progress) -> Transport:
    """Pin the new appliance's host key, log in once with the root password and install the fleet key."""
    if appliance.transport == Appliance.Transport.LOCAL:
        transport = transport_for(appliance)
        install_va_side(transport, ENGINE_DIR)
        return transport
    if not appliance.address:
        raise DeployError(f"{appliance.name} was created but reported no IP address (DHCP): check the network's "
                          "DHCP service, or give the appliance a static address, and redeploy.")
    progress(f"Waiting for SSH on {appliance.address}", 62)
    host_key = _wait_for_ssh(appliance.address, appliance.port, made.host_key)
    appliance.host_key, appliance.host_key_fingerprint = host_key, fingerprint(host_key)
    appliance.save(update_fields=["host_key", "host_key_fingerprint", "updated"])
    progress("Installing the fleet key", 66)
    return bootstrap(appliance.address, appliance.port, host_key, appliance.root_password,
                     engine_dir=ENGINE_DIR, connect_timeout=settings.VAFLEET_CONNECT_TIMEOUT)


def _wait_for_ssh(address: str, port: int, expected: str) -> str:
    from appliances.transports.ssh import scan_host_key

    deadline = time.monotonic() + settings.VAFLEET_APPLIANCE_BOOT_SECONDS
    while True:
        try:
            key = scan_host_key(address, port, timeout=min(5, settings.VAFLEET_CONNECT_TIMEOUT))
            break
        except UnreachableError as exc:
            if time.monotonic() >= deadline:
                raise DeployError(f"The appliance did not answer on SSH within "
                                  f"{settings.VAFLEET_APPLIANCE_BOOT_SECONDS} s of being created ({exc})") from exc
            time.sleep(1)
    if expected and key.split()[:2] != expected.split()[:2]:
        raise HostKeyMismatchError(f"{address}:{port} presents host key {fingerprint(key)}, not the key of the "
                                   f"appliance just deployed ({fingerprint(expected)}): another machine answers "
                                   "at that address; check for an address conflict.")
    return key


def redeploy(appliance: Appliance, progress, item) -> str:
    if appliance.vm_moref or appliance.deploy_handle.get("labhost"):
        progress("Removing the old appliance VM", 1)
        _remove_vm(appliance)
    appliance.host_key = appliance.host_key_fingerprint = ""
    if appliance.addressing == Appliance.Addressing.DHCP:
        appliance.address = None
    appliance.save(update_fields=["host_key", "host_key_fingerprint", "address", "updated"])
    return deploy(appliance, progress, item)


def _remove_vm(appliance: Appliance) -> None:
    deployer_for(appliance.connection).remove(appliance.vm_moref, appliance.deploy_handle)
    handle = {"disk_mib": appliance.deploy_handle["disk_mib"]} if appliance.deploy_handle.get("disk_mib") else {}
    appliance.vm_moref, appliance.deploy_handle = "", handle
    appliance.save(update_fields=["vm_moref", "deploy_handle", "updated"])
    if appliance.transport == Appliance.Transport.LOCAL:
        shutil.rmtree(local_home(appliance), ignore_errors=True)


def remove(appliance: Appliance, progress, item) -> str:
    before = appliance.state
    _set_state(appliance, Appliance.State.REMOVING)
    try:
        if appliance.vm_moref or appliance.deploy_handle.get("labhost"):
            progress("Removing the appliance VM", 10)
            _remove_vm(appliance)
    except SENTENCE_ERRORS as exc:
        _set_state(appliance, before, f"Removal failed: {exc}")
        raise
    name = appliance.name
    appliance.delete()
    return f"Removed {name}."


def upgrade(appliance: Appliance, progress, item) -> str:
    progress("Checking the engine version", 10)
    try:
        with transport_for(appliance) as transport:
            bundle = current_bundle()
            progress(f"Bringing the engine to {bundle.version}", 30)
            result = ensure_engine(transport, bundle, ENGINE_DIR, python_for(appliance))
    except LOST_CONTACT as exc:
        _set_state(appliance, Appliance.State.UNREACHABLE, str(exc), health_message=str(exc)[:500])
        raise
    item.bytes_sent = result.bytes_sent
    now = timezone.now()
    _set_state(appliance, Appliance.State.READY, engine_version=result.version,
               engine_previous=result.previous or "", last_seen=now)
    if not result.uploaded:
        return f"Already on {result.version}; nothing sent."
    sent = result.bytes_sent / 1e6
    return f"Upgraded to {result.version} (previous {result.previous or 'none'}; {sent:.1f} MB sent)."


def health(appliance: Appliance, progress, item) -> str:
    from appliances.health import check_appliance

    progress("Checking", 20)
    report = check_appliance(appliance)
    if not report.reachable:
        raise ActionableError(report.message)
    return report.message or "Healthy."


def engine_ready_transport(appliance: Appliance) -> Transport:
    """Before every job: a transport to the appliance whose engine is the current one (injected if not)."""
    transport = None
    try:
        transport = transport_for(appliance)
        result = ensure_engine(transport, current_bundle(), ENGINE_DIR, python_for(appliance))
    except BaseException as exc:
        if transport is not None:
            transport.close()
        if isinstance(exc, LOST_CONTACT):
            _set_state(appliance, Appliance.State.UNREACHABLE, str(exc), health_message=str(exc)[:500])
        raise
    if result.uploaded or appliance.engine_version != result.version:
        appliance.engine_version, appliance.engine_previous = result.version, result.previous or ""
        appliance.save(update_fields=["engine_version", "engine_previous", "updated"])
    return transport
