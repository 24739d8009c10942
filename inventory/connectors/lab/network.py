"""Network mode in the lab: one snapshot disk served over HTTPS with Range reads, for one backup.

`serve_snapshot_disk()` is a context manager. While it is open, a small threaded HTTPS server
serves exactly one disk as a snapshot froze it (the chain overlaid up to the frozen file; holes
read as zeros) at one path, with HEAD, Content-Length (the disk's capacity) and single byte
ranges. It listens on a fresh ephemeral port of the one address of this machine that the
appliance reaches: 127.0.0.1 for the local appliance, or the host side (10.231.x.1) of a lab
appliance's veth, which only that appliance's network namespace can reach. It never listens on
every interface. The certificate is self-signed and made for this context only (its SHA-256
thumbprint is handed over as the pin), and every request must carry a random session cookie.

The chain's files are opened once when the context starts and stay open until it ends, so a
consolidation of an older snapshot meanwhile (which merges and deletes a delta) changes nothing
that is served. The snapshot itself must stay until the context exits: removing it merges the
live delta into the frozen file. When the context exits the server stops, every client
connection is shut down, and the files are closed.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from inventory.connectors.base import ConnectorError, canonical_thumbprint
from inventory.connectors.lab import snapshots
from inventory.connectors.lab.disks import DiskChain
from inventory.connectors.lab.state import LabState, get
from inventory.connectors.lab.vms import chain_of, disk_of

COOKIE_NAME = "vafleet_lab_session"
LOOPBACK = "127.0.0.1"
# Lab appliances live in 10.231.0.0/16, one /30 each: .1 is this machine, .2 the appliance (appliances.labnet).
LAB_SUBNET = ipaddress.ip_network("10.231.0.0/16")
COPY_BLOCK = 1 << 20
IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle before the server closes it
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int, int] | None:
    """(status, first, last byte) that a GET with this Range header gets; None: 416 (not satisfiable)."""
    if not header:
        return 200, 0, size - 1
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return 206, start, end


def bind_address(appliance_address: str) -> str:
    """The address of this machine that the appliance at `appliance_address` reaches.

    Empty or loopback: 127.0.0.1 (the built-in local appliance). A lab appliance's address
    (10.231.x.y, y % 4 == 2) or the host side of its veth (y % 4 == 1): that host side.
    Anything else cannot reach a server of this machine's lab.
    """
    text = (appliance_address or "").strip()
    if text in ("", "localhost"):
        return LOOPBACK
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ConnectorError(
            f"{text!r} is not an IP address: network mode in the lab needs the appliance's address "
            "(empty or 127.0.0.1 for the local appliance, 10.231.x.y for a lab appliance)."
        ) from None
    if ip.is_loopback:
        return LOOPBACK
    if ip.version == 4 and ip in LAB_SUBNET and int(ip) % 4 in (1, 2):
        return str(ipaddress.ip_address(int(ip) - int(ip) % 4 + 1))
    raise ConnectorError(
        f"The lab serves snapshot disks over the network only to appliances on this machine (the local "
        f"appliance, or lab appliances on {LAB_SUBNET}); {text} is neither. Deploy the appliance in the lab, "
        "or use hot-add."
    )


def make_certificate(host: str) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for `host`, loaded into a server context; returns it and its thumbprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"VA Fleet lab disk server {host}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl loads keys from files only: a private folder that is gone once they are loaded
    with tempfile.TemporaryDirectory(prefix="vafleet-netdisk-") as folder:
        cert_path, key_path = Path(folder) / "server.crt", Path(folder) / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    return context, canonical_thumbprint(hashlib.sha256(der).hexdigest())


class _View:
    """The disk as the snapshot froze it, over files opened once (base first)."""

    def __init__(self, files: list[tuple[int, list]], capacity: int):
        self.files = files
        self.capacity = capacity

    def read_into(self, offset: int, view: memoryview) -> None:
        DiskChain._read_into(self.files, view, offset)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: each engine worker keeps one connection
    server: _DiskServer
    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:  # the backup's own log tells what happened
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _reply(self, status: int, headers: dict[str, str] | None = None, text: str = "") -> None:
        payload = text.encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _authorized(self) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except CookieError:
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.server.token.encode())

    def _serve(self, body: bool) -> None:
        server = self.server
        if not self._authorized():
            self._reply(401, text="A valid session cookie is required.\n")
            return
        if self.path.partition("?")[0] != server.path:
            self._reply(404, text="Not found.\n")
            return
        size = server.view.capacity
        wanted = byte_range(self.headers.get("Range"), size)
        if wanted is None:
            self._reply(416, {"Content-Range": f"bytes */{size}"})
            return
        status, start, end = wanted
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body or not length:
            return
        buf = memoryview(bytearray(min(COPY_BLOCK, length)))
        offset = start
        while offset <= end:
            piece = buf[:min(len(buf), end + 1 - offset)]
            server.view.read_into(offset, piece)
            self.wfile.write(piece)
            offset += len(piece)
        server.count(length)


class _DiskServer(ThreadingHTTPServer):
    """Threaded (one thread per connection); tracks connections so that stopping closes them all."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread: no read outlives the open files
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, view: _View, path: str, token: str):
        self.tls_context = context
        self.view = view
        self.path = path
        self.token = token
        self.requests = 0
        self.bytes_sent = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (getfqdn); the address is all we need
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def count(self, sent: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += sent

    def get_request(self):
        sock, address = super().get_request()
        # the handshake runs in the connection's own thread, not in the accepting loop
        tls = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._open.add(tls)
        return tls, address

    def shutdown_request(self, request) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        # clients that hang up, or refuse the certificate (a wrong pin), are not server errors
        if not isinstance(sys.exc_info()[1], OSError | ssl.SSLError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._open)
        for sock in connections:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket under TLS: a blocked read ends
            except OSError:
                pass


@contextmanager
def serve_snapshot_disk(
    state: LabState, vm: str, snapshot: str, disk_key: int, appliance_address: str = ""
) -> Iterator[dict]:
    """Serve disk `disk_key` of VM `vm` as snapshot `snapshot` froze it; yields the engine's disk source."""
    host = bind_address(appliance_address)
    with ExitStack() as stack:
        with state.locked():  # a consistent chain while its files are opened
            data = state.read()
            vm_data = get(data, "vms", vm)
            entry = next((e for e in snapshots.find(vm_data, vm, snapshot)["disks"] if e["key"] == int(disk_key)),
                         None)
            if entry is None:
                raise ConnectorError(f"Snapshot {snapshot} of VM {vm_data['name']} has no disk {disk_key}.")
            chain = chain_of(state, data, disk_of(vm_data, disk_key, vm))
            files = stack.enter_context(chain._open(chain.index_of(entry["frozen"])))
        view = _View(files, chain.capacity)
        context, thumbprint = make_certificate(host)
        token = secrets.token_urlsafe(32)
        path = f"/snapshots/{snapshot}/disk-{int(disk_key)}.img"
        try:
            server = _DiskServer((host, 0), context, view, path, token)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConnectorError(
                    f"No interface of this machine has address {host}: the lab appliance that connects from "
                    f"{appliance_address} is not running; start it and retry."
                ) from exc
            raise ConnectorError(f"Cannot open a network-mode disk server on {host}: {exc.strerror or exc}.") from exc
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name=f"lab-disk-{vm}-{disk_key}", daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            yield {
                "path": f"https://{host}:{port}{path}",
                "options": {"cookie": f"{COOKIE_NAME}={token}", "thumbprint": thumbprint},
            }
        finally:
            server.shutdown()  # no new connections
            server.close_connections()  # ends keep-alive connections and reads in progress
            server.server_close()  # closes the listening socket and joins the handler threads
            thread.join()
