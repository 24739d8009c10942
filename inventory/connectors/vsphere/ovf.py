"""Importing an OVF package: import spec, ImportVApp, HttpNfcLease uploads, and clean-up on failure.

Every check that has a clear answer (host, datastore, network, free space, name) runs before
anything is created. Once ImportVApp made the VM, any failure aborts the lease and destroys it.
"""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pyVmomi import vim, vmodl

from inventory.connectors.base import ConnectionParams, ConnectorError, NotFound
from inventory.connectors.vsphere import session
from inventory.connectors.vsphere.collector import Collector, view_filter
from inventory.connectors.vsphere.inventory import escape_name

CHUNK = 1 << 20
GIB = 1 << 30
Phase = Callable[[str, int], None]  # (sentence, percent of the import)


@dataclass
class OvfImport:
    name: str
    host: str  # morefs
    datastore: str
    network: str
    descriptor: str  # OVF XML
    files: dict[str, Path]  # href in the descriptor -> local file
    properties: dict[str, str] = field(default_factory=dict, repr=False)
    network_name: str = "VA Network"  # the network the descriptor declares
    num_cpu: int | None = None
    memory_mb: int | None = None
    lease_timeout: float = 300.0


def _ancestor(collector: Collector, obj, kind: type):
    while obj is not None and not isinstance(obj, kind):
        obj = collector.properties(obj, ["parent"]).get("parent")
    return obj


def _props(collector: Collector, obj, paths: list[str]) -> dict:
    """Named properties of an object; {} when the object does not exist."""
    try:
        return collector.properties(obj, paths)
    except vmodl.fault.ManagedObjectNotFound:
        return {}


def _name_taken(collector: Collector, folder, name: str) -> bool:
    """Whether any VM in the datacenter (any folder) already has this name."""
    view = collector.content.viewManager.CreateContainerView(folder, [vim.VirtualMachine], True)
    try:
        return any(props.get("name") == name
                   for _, props in collector.retrieve(view_filter(view, {vim.VirtualMachine: ["name"]})))
    finally:
        view.DestroyView()


def _placement(collector: Collector, spec: OvfImport, stub) -> tuple:
    host = vim.HostSystem(spec.host, stub)
    host_props = _props(collector, host, ["name", "parent", "datastore", "network"])
    if not host_props:
        raise NotFound(f"Host {spec.host} does not exist: sync the inventory and choose another host.")
    ds = vim.Datastore(spec.datastore, stub)
    ds_props = _props(collector, ds, ["name", "summary.freeSpace", "summary.accessible"])
    if not ds_props:
        raise NotFound(f"Datastore {spec.datastore} does not exist: sync the inventory and choose another datastore.")
    if spec.datastore not in {d._moId for d in host_props.get("datastore") or []}:
        raise ConnectorError(f"Datastore {ds_props['name']} is not mounted on host {host_props['name']}: "
                             "choose a datastore that host sees.")
    kind = vim.dvs.DistributedVirtualPortgroup if spec.network.startswith("dvportgroup-") else vim.Network
    network = kind(spec.network, stub)
    net_name = _props(collector, network, ["name"]).get("name")
    if not net_name:
        raise NotFound(f"Network {spec.network} does not exist: sync the inventory and choose another network.")
    if spec.network not in {n._moId for n in host_props.get("network") or []}:
        raise ConnectorError(f"Network {net_name} is not available on host {host_props['name']}: "
                             "choose a port group that host is connected to.")
    needed = sum(p.stat().st_size for p in spec.files.values()) + (spec.memory_mb or 0) * (1 << 20)
    free = ds_props.get("summary.freeSpace")
    if free is not None and free < needed:
        raise ConnectorError(f"Datastore {ds_props['name']} is full: it has {free / GIB:.1f} GiB free and the "
                             f"appliance needs {needed / GIB:.1f} GiB. Free space or choose another datastore.")
    datacenter = _ancestor(collector, host_props["parent"], vim.Datacenter)
    folder = collector.properties(datacenter, ["vmFolder"])["vmFolder"]
    if _name_taken(collector, folder, escape_name(spec.name)):
        raise ConnectorError(f"A VM named {spec.name!r} already exists: choose another name or remove that VM.")
    pool = collector.properties(host_props["parent"], ["resourcePool"])["resourcePool"]
    return host, host_props["name"], ds, ds_props["name"], network, pool, folder


def import_spec(collector: Collector, spec: OvfImport, pool, ds, host, network):
    params = vim.OvfManager.CreateImportSpecParams(
        entityName=escape_name(spec.name), hostSystem=host, diskProvisioning="thin", locale="", deploymentOption="",
        networkMapping=[vim.OvfManager.NetworkMapping(name=spec.network_name, network=network)],
        propertyMapping=[vim.KeyValue(key=k, value=v) for k, v in spec.properties.items()],
    )
    result = collector.content.ovfManager.CreateImportSpec(spec.descriptor, pool, ds, params)
    if result.error:
        reasons = "; ".join(e.localizedMessage or e.fault.msg or type(e.fault).__name__ for e in result.error)
        raise ConnectorError(f"vCenter cannot import the appliance package: {reasons}.")
    config = result.importSpec.configSpec
    if spec.num_cpu:
        config.numCPUs = spec.num_cpu
    if spec.memory_mb:
        config.memoryMB = spec.memory_mb
    return result


def warnings(result) -> list[str]:
    return [w.localizedMessage or w.fault.msg or type(w.fault).__name__ for w in result.warning or []]


def deploy(collector: Collector, params: ConnectionParams, thumbprint: str, spec: OvfImport,
           phase: Phase) -> tuple[str, list[str]]:
    """Import the package as a new VM (powered off); returns its moref and vCenter's warnings."""
    stub = collector.si._stub
    phase("Checking the host, datastore and network", 2)
    host, host_name, ds, _ds_name, network, pool, folder = _placement(collector, spec, stub)
    phase(f"Asking vCenter for an import spec for host {host_name}", 5)
    result = import_spec(collector, spec, pool, ds, host, network)
    lease = pool.ImportVApp(spec=result.importSpec, folder=folder, host=host)
    vm = None
    try:
        info = _wait_ready(collector, lease, spec.lease_timeout)
        vm = info.entity
        _upload_all(collector, params, thumbprint, spec, result, info, lease, phase)
        lease.HttpNfcLeaseComplete()
    except BaseException as exc:
        _abort(lease, exc)
        if vm is not None:
            destroy(collector, vm._moId, missing_ok=True)
        raise
    phase("Import complete", 100)
    return vm._moId, warnings(result)


def _wait_ready(collector: Collector, lease, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        props = collector.properties(lease, ["state", "error", "info"])
        state = props.get("state")
        if state == vim.HttpNfcLease.State.ready:
            return props["info"]
        if state == vim.HttpNfcLease.State.error:
            error = props.get("error")
            raise ConnectorError(f"vCenter could not prepare the import: {getattr(error, 'msg', '') or error}.")
        if time.monotonic() > deadline:
            raise ConnectorError(f"The import lease was not ready within {timeout:g} s: retry later.")
        time.sleep(0.2)


def _upload_all(collector, params, thumbprint, spec: OvfImport, result, info, lease, phase: Phase) -> None:
    items = list(result.fileItem or [])
    total = sum(spec.files[i.path].stat().st_size for i in items if i.path in spec.files) or 1
    urls = {u.importKey: u for u in info.deviceUrl or []}
    sent, last = 0, time.monotonic()

    def advance(count: int) -> None:
        nonlocal sent, last
        sent += count
        percent = min(100, sent * 100 // total)
        if time.monotonic() - last >= 2 or sent >= total:
            lease.HttpNfcLeaseProgress(percent=percent)  # also keeps the lease alive
            last = time.monotonic()
        phase(f"Uploading the appliance disk: {percent}%", 10 + percent * 85 // 100)

    for item in items:
        if item.path not in spec.files:
            raise ConnectorError(f"The appliance package lacks the file {item.path} its descriptor references.")
        target = urls.get(item.deviceId)
        if target is None:
            raise ConnectorError(f"vCenter gave no upload address for {item.path} ({item.deviceId}).")
        _upload(params, thumbprint, target, spec.files[item.path], "PUT" if item.create else "POST", advance)


def _upload(params: ConnectionParams, thumbprint: str, target, path: Path, method: str, advance) -> None:
    url = urlsplit(target.url.replace("://*", f"://{session.address(params)}", 1))
    host, port = url.hostname or params.host, url.port or 443
    same_endpoint = host == params.host and port == params.port
    conn = http.client.HTTPSConnection(host, port, timeout=max(params.timeout, 60), context=session.tls_context(params))
    try:
        conn.connect()
        _check_peer(params, conn.sock.getpeercert(binary_form=True), thumbprint if same_endpoint else "",
                    target.sslThumbprint or "", f"{host}:{port}")
        size = path.stat().st_size
        conn.putrequest(method, url.path + (f"?{url.query}" if url.query else ""))
        conn.putheader("Content-Type", "application/x-vnd.vmware-streamVmdk")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                conn.send(chunk)
                advance(len(chunk))
        response = conn.getresponse()
        body = response.read(2000).decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        raise ConnectorError(f"Uploading {path.name} to {host}:{port} failed ({exc}): check that this server "
                             "reaches the ESXi host on port 443.") from exc
    finally:
        conn.close()
    if response.status >= 300:
        raise ConnectorError(f"{host}:{port} refused the upload of {path.name} "
                             f"(HTTP {response.status}{': ' + body if body else ''}).")


def _check_peer(params: ConnectionParams, der: bytes, pinned: str, lease_sha1: str, where: str) -> None:
    """The upload endpoint must be the pinned server, or the host whose thumbprint vCenter vouched for."""
    if params.tls_verify:
        return  # the context verified the chain and the host name
    if pinned:
        expected, actual = session.normalize_thumbprint(pinned), session.format_thumbprint(der)
    elif lease_sha1:
        expected = session.normalize_thumbprint(lease_sha1)
        digest = (hashlib.sha1(der) if len(expected) == 59 else hashlib.sha256(der)).hexdigest().upper()  # noqa: S324
        actual = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    else:
        raise ConnectorError(f"Cannot verify the certificate of {where} for the upload: vCenter gave no thumbprint; "
                             "turn on certificate verification for this connection.")
    if expected != actual:
        raise ConnectorError(f"The certificate of {where} does not match the expected thumbprint ({actual} instead "
                             f"of {expected}): the upload was stopped.")


def _abort(lease, exc: BaseException) -> None:
    fault = vmodl.fault.SystemError(reason=str(exc) or type(exc).__name__)
    try:
        lease.HttpNfcLeaseAbort(fault=fault)
    except Exception:  # noqa: S110 - the lease may already be gone; the VM is removed next
        pass


def destroy(collector: Collector, vm: str, *, missing_ok: bool = False) -> None:
    """Power off (if on) and delete a VM and its files."""
    ref = vim.VirtualMachine(vm, collector.si._stub)
    try:
        state = collector.properties(ref, ["runtime.powerState"]).get("runtime.powerState")
        if state is None:
            raise vmodl.fault.ManagedObjectNotFound(obj=ref)
        if state != vim.VirtualMachine.PowerState.poweredOff:
            collector.wait(ref.PowerOffVM_Task())
        collector.wait(ref.Destroy_Task())
    except vmodl.fault.ManagedObjectNotFound as exc:
        if not missing_ok:
            raise NotFound(f"VM {vm} does not exist (already removed?).") from exc


def power_on(collector: Collector, vm: str) -> None:
    ref = vim.VirtualMachine(vm, collector.si._stub)
    if collector.properties(ref, ["runtime.powerState"]).get("runtime.powerState") != "poweredOn":
        collector.wait(ref.PowerOnVM_Task())


def vapp_properties(collector: Collector, vm: str, keys: list[str] | None = None) -> dict[str, str]:
    """The VM's vApp property values by key.

    vCenter keeps them in config.vAppConfig; govmomi's simulator stores the import's property
    mapping as extraConfig entries instead, so those are read too (limited to `keys` when given).
    """
    ref = vim.VirtualMachine(vm, collector.si._stub)
    props = collector.properties(ref, ["config.vAppConfig", "config.extraConfig"])
    found: dict[str, str] = {}
    for option in props.get("config.extraConfig") or []:
        if keys is not None and option.key in keys:
            found[option.key] = str(option.value)
    vapp = props.get("config.vAppConfig")
    for prop in getattr(vapp, "property", None) or []:
        if keys is None or prop.id in keys:
            found[prop.id] = prop.value if prop.value is not None else (prop.defaultValue or "")
    return found


def guest_address(collector: Collector, vm: str) -> str:
    """The first IPv4 address VMware Tools reports for the guest ('' when none yet)."""
    props = collector.properties(vim.VirtualMachine(vm, collector.si._stub), ["guest.net", "guest.ipAddress"])
    candidates = [a for nic in props.get("guest.net") or [] for a in nic.ipAddress or []]
    candidates.append(props.get("guest.ipAddress") or "")
    return next((a for a in candidates if a.count(".") == 3 and not a.startswith(("169.254.", "127."))), "")
