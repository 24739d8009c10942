"""Network mode on vSphere: a snapshot disk read through the datastore's HTTPS `/folder` interface.

vCenter and ESXi serve every datastore file at
`https://<host>/folder/<path>?dcPath=<datacenter path>&dsName=<datastore>`, with Range reads, to
any client that presents a logged-in API session (the `vmware_soap_session` cookie). So the
engine on an appliance that cannot hot-add the disk reads it there, with this connector's
session cookie and the connection's trust (its pinned certificate thumbprint, or CA checks when
the connection verifies certificates). The address is the connection's endpoint: through vCenter
the read is proxied to the host that holds the datastore.

Which file holds the bytes: a disk `[ds] vm/vm.vmdk` is a small text descriptor on ESXi; its data
is the flat extent `vm/vm-flat.vmdk`, a raw image of the disk's capacity. So the flat file is
used when the datastore has it. Without one, the descriptor's own name is used only when that
file is as large as the disk (a raw image under the disk's name); anything else (SEsparse,
vSAN or vVol objects, a hosted sparse disk) is not a raw image over HTTP, and is refused with a
sentence. A snapshot whose disk is itself a delta of an older snapshot (`vm-000001.vmdk`) is
refused too: its file holds only the blocks written since that older snapshot, in a delta
format, not the disk.

govmomi's simulator stores both `vm.vmdk` and `vm-flat.vmdk` (empty files, whatever the
capacity) and serves them under `/folder` without checking the session cookie; the flat file is
what is read there too.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from pyVmomi import vim

from inventory.connectors.base import (
    AuthenticationFailed,
    CertificateMismatch,
    ConnectionParams,
    ConnectorError,
    NotFound,
    SnapshotRef,
)
from inventory.connectors.vsphere import session
from inventory.connectors.vsphere.collector import Collector

SESSION_COOKIE = "vmware_soap_session"
DELTA = re.compile(r"-\d{6}\.vmdk$")


def parse_file_name(file_name: str) -> tuple[str, str]:
    """'[datastore] folder/disk.vmdk' -> ('datastore', 'folder/disk.vmdk'); NotFound otherwise."""
    match = re.match(r"^\[([^\]]+)\]\s*(\S.*)$", (file_name or "").strip())
    if not match or match.group(2).startswith("/") or ".." in match.group(2).split("/"):
        raise NotFound(f"{file_name!r} is not a datastore path of the form '[datastore] folder/disk.vmdk'.")
    return match.group(1), match.group(2)


def session_cookie(collector: Collector) -> str:
    """`vmware_soap_session=...` of the logged-in API session (without the cookie's attributes)."""
    raw = getattr(collector.si._stub, "cookie", "") or ""
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return f"{name}={value}"
    raise ConnectorError("The vSphere session has no session cookie: network mode cannot read disks; log in again.")


def datacenter_path(collector: Collector, datastore: str) -> str:
    """The inventory path of the datacenter that holds a datastore ('DC1', or 'Europe/DC1' inside folders)."""
    stub = collector.si._stub
    parent = collector.properties(vim.Datastore(datastore, stub), ["parent"]).get("parent")
    while parent is not None and not isinstance(parent, vim.Datacenter):
        parent = collector.properties(parent, ["parent"]).get("parent")
    if parent is None:
        raise NotFound(f"Datastore {datastore} is in no datacenter (removed?): sync the inventory and retry.")
    root, names, node = collector.content.rootFolder._moId, [], parent
    while node is not None and node._moId != root:
        props = collector.properties(node, ["name", "parent"])
        names.append(props["name"])
        node = props.get("parent")
    return "/".join(reversed(names))


def folder_url(params: ConnectionParams, datacenter: str, datastore: str, relative: str) -> str:
    return (f"https://{session.address(params)}/folder/{quote(relative)}"
            f"?dcPath={quote(datacenter, safe='/')}&dsName={quote(datastore, safe='')}")


def _probe(params: ConnectionParams, thumbprint: str, url: str, cookie: str) -> int | None:
    """Size of the file at `url` (None when the datastore has no such file), on a connection checked like the API's."""
    target = url.split(session.address(params), 1)[1]
    conn = http.client.HTTPSConnection(params.host, params.port, timeout=params.timeout,
                                       context=session.tls_context(params))
    where = session.address(params)
    try:
        conn.connect()
        if not params.tls_verify:
            seen = session.format_thumbprint(conn.sock.getpeercert(binary_form=True))
            if seen != session.normalize_thumbprint(thumbprint):
                raise CertificateMismatch(
                    f"The certificate of {where} changed during the session (now {seen}): check the server.", seen)
        headers = {"Cookie": cookie}
        conn.request("HEAD", target, headers=headers)
        response = conn.getresponse()
        response.read()
        status, length = response.status, response.getheader("Content-Length")
        if status in (405, 501):  # no HEAD here: the total of a one-byte range answer
            conn.request("GET", target, headers={**headers, "Range": "bytes=0-0"})
            response = conn.getresponse()
            response.read()
            status, length = response.status, (response.getheader("Content-Range") or "").rpartition("/")[2]
            status = 200 if status in (206, 416) else status
    except (OSError, http.client.HTTPException) as exc:
        raise session.unreachable(params, exc) from exc
    finally:
        conn.close()
    if status == 404:
        return None
    if status == 401:
        raise AuthenticationFailed(f"{where} refused the session cookie for datastore files (HTTP 401): log in again.")
    if status == 403:
        raise ConnectorError(f"{where} refused to serve datastore files (HTTP 403): give the account the "
                             "Datastore.Browse privilege on the datastore.")
    if status != 200 or not (length or "").isdigit():
        raise ConnectorError(f"{where} answered HTTP {status} for a datastore file: network mode cannot read it.")
    return int(length)


def datastore_source(collector: Collector, params: ConnectionParams, thumbprint: str, snapshot: SnapshotRef,
                     disk: dict) -> dict:
    """The engine's disk source for one snapshot disk: {"path": datastore URL, "options": {cookie, trust}}."""
    file_name = disk.get("file_name") or ""
    try:
        datastore_name, relative = parse_file_name(file_name)
    except NotFound as exc:
        raise ConnectorError(f"Disk {disk.get('key')} of snapshot {snapshot.name!r}: {exc}") from None
    if DELTA.search(relative):
        raise ConnectorError(
            f"Disk {file_name} of snapshot {snapshot.name!r} is a delta of an older snapshot of VM {snapshot.vm}: "
            "over the network only a snapshot taken on a VM without other snapshots can be read. Remove the "
            "older snapshots (or consolidate the VM's disks), or use hot-add."
        )
    if not disk.get("datastore"):
        raise NotFound(f"Disk {file_name} of snapshot {snapshot.name!r} names no datastore: sync the inventory.")
    datacenter = datacenter_path(collector, disk["datastore"])
    cookie = session_cookie(collector)
    capacity = int(disk.get("capacity_bytes") or 0)
    flat = relative[: -len(".vmdk")] + "-flat.vmdk" if relative.endswith(".vmdk") else ""
    url = ""
    if flat and _probe(params, thumbprint, folder_url(params, datacenter, datastore_name, flat), cookie) is not None:
        url = folder_url(params, datacenter, datastore_name, flat)
    else:
        named = folder_url(params, datacenter, datastore_name, relative)
        size = _probe(params, thumbprint, named, cookie)
        if size is None:
            raise NotFound(f"Datastore {datastore_name} has neither {flat or relative} nor {relative}: the disk of "
                           f"snapshot {snapshot.name!r} cannot be read over the network (moved or removed?).")
        if size != capacity:
            raise ConnectorError(
                f"{file_name} has no flat extent ({flat} is missing) and is {size} bytes, not a raw image of the "
                f"{capacity}-byte disk: it is stored in a format the datastore's HTTPS interface cannot serve as "
                "a disk (SEsparse, vSAN, vVols or a hosted sparse disk); use hot-add."
            )
        url = named
    trust = {"verify": True} if params.tls_verify else {"thumbprint": session.normalize_thumbprint(thumbprint)}
    return {"path": url, "options": {"cookie": cookie, **trust}}


@contextmanager
def held(source: dict) -> Iterator[dict]:
    """The source for the context: the datastore serves it as long as the session and the snapshot last."""
    yield source
