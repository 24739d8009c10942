"""A small HTTPS server that serves a folder the way vSphere serves a datastore.

GET/HEAD `/folder/<path>?dcPath=<datacenter>&dsName=<datastore>` with `Range` support
(206 partial content, 416 past the end), Basic or cookie authentication, a self-signed
certificate made with `cryptography`, and an optional added latency per request to stand in
for a WAN or a busy host. Runs in a thread (`RangeServer(...).start()`) or as a process:

    python -m tests.harness.rangeserver ROOT [--port 0] [--latency-ms 20] [--user U --password P]

which prints one JSON line {"url": ..., "thumbprint": ...} once it listens.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from inventory.connectors.lab.network import byte_range

COPY_BLOCK = 1 << 20


def make_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, str]:
    """A self-signed certificate for `host`; returns (cert path, key path, SHA-256 thumbprint hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    thumbprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return cert_path, key_path, thumbprint


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vSphere does
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read results, not logs
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
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _authorized(self) -> bool:
        server = self.server
        if server.user is None and server.cookie is None:
            return True
        header = self.headers.get("Authorization", "")
        if server.user is not None and header.startswith("Basic "):
            expected = base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
            if header[6:].strip() == expected:
                return True
        return server.cookie is not None and server.cookie in self.headers.get("Cookie", "")

    def _serve(self, body: bool) -> None:
        server = self.server
        server.requests += 1
        if server.latency:
            time.sleep(server.latency)
        if not self._authorized():
            self._reply(401, {"WWW-Authenticate": 'Basic realm="VMware HTTP server"'}, "Unauthorized")
            return
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not parts.path.startswith("/folder/") or query.get("dsName") != [server.datastore] or (
            query.get("dcPath") != [server.datacenter]
        ):
            self._reply(404, text="Not Found")
            return
        relative = unquote(parts.path[len("/folder/") :])
        path = (server.root / relative).resolve()
        if server.root not in path.parents or not path.is_file():
            self._reply(404, text="Not Found")
            return
        size = path.stat().st_size
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
        if not body:
            return
        server.bytes_sent += length
        buf = bytearray(min(COPY_BLOCK, max(length, 1)))
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            offset = start
            while offset <= end:
                n = os.preadv(f.fileno(), [view[: min(len(buf), end + 1 - offset)]], offset)
                if n == 0:
                    break
                self.wfile.write(view[:n])
                offset += n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    datastore: str
    datacenter: str
    user: str | None
    password: str | None
    cookie: str | None
    latency: float
    requests: int = 0
    bytes_sent: int = 0
    connections: int = 0
    tls_context: ssl.SSLContext | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        # clients that hang up or refuse our self-signed certificate are part of the tests
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def get_request(self):
        sock, address = super().get_request()
        self.connections += 1
        if self.tls_context is not None:
            # the handshake then runs in the handler's thread, not in the accepting loop
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class RangeServer:
    """Serves `root` as datastore `datastore` of datacenter `datacenter` on 127.0.0.1."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        datastore: str = "datastore1",
        datacenter: str = "dc1",
        user: str | None = None,
        password: str | None = None,
        cookie: str | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
    ):
        self.host = host
        self._certdir = Path(tempfile.mkdtemp(prefix="rangeserver-"))
        self.server = _Server((host, port), _Handler)
        self.server.root = Path(root).resolve()
        self.server.datastore, self.server.datacenter = datastore, datacenter
        self.server.user, self.server.password, self.server.cookie = user, password, cookie
        self.server.latency = latency
        self.thumbprint = ""
        if tls:
            cert, key, self.thumbprint = make_certificate(self._certdir, host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.tls_context = context
        self.scheme = "https" if tls else "http"
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, relative: str) -> str:
        """The datastore address of a file under the served folder."""
        path = quote(relative)
        dc, ds = quote(self.server.datacenter), quote(self.server.datastore)
        return f"{self.scheme}://{self.host}:{self.port}/folder/{path}?dcPath={dc}&dsName={ds}"

    @property
    def requests(self) -> int:
        return self.server.requests

    def set_latency(self, seconds: float) -> None:
        self.server.latency = seconds

    def start(self) -> RangeServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="rangeserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self._certdir, ignore_errors=True)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve a folder like a vSphere datastore over HTTPS.")
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--datastore", default="datastore1")
    parser.add_argument("--datacenter", default="dc1")
    args = parser.parse_args()
    server = RangeServer(
        args.root, datastore=args.datastore, datacenter=args.datacenter, user=args.user,
        password=args.password, latency=args.latency_ms / 1000, port=args.port,
    )
    print(json.dumps({"url": server.url(""), "thumbprint": server.thumbprint}), flush=True)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
