"""A disk read over HTTPS with Range requests (network mode: vSphere's datastore `/folder` path).

Each thread keeps its own keep-alive connection, so the pipeline's parallel workers hide the
round-trip time; an optional read-ahead fetches the next pieces of a sequential reader.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlsplit

from engines.errors import SourceAuthFailed, SourceError, SourceNotFound, SourceUnreachable
from engines.sources import validate_extents
from engines.sources.base import Source

USER_AGENT = "vafleet-engine"
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


def normalize_thumbprint(text: str) -> str:
    """'AB:CD:..' or 'abcd..' (optionally 'sha256:' first) -> lowercase hex without separators."""
    text = text.strip().lower().removeprefix("sha256:")
    return text.replace(":", "").replace(" ", "")


def _pretty(hexdigest: str) -> str:
    return ":".join(hexdigest[i : i + 2] for i in range(0, len(hexdigest), 2)).upper()


class HttpSource(Source):
    """Reads the disk at `url` (https://host/folder/path?dcPath=..&dsName=..).

    auth: (user, password) for Basic auth; cookie: a session cookie such as
    'vmware_soap_session="..."'; verify: True (system CAs), a CA bundle path, or False;
    thumbprint: the server certificate's pinned SHA-256 (replaces CA checks when given);
    readahead: pieces fetched ahead of a sequential reader (0 turns it off; 8 took a
    2-worker backup from 63 to 200 MB/s at 20 ms per request, docs/performance.md).
    """

    def __init__(
        self,
        url: str,
        auth: tuple[str, str] | None = None,
        *,
        cookie: str | None = None,
        verify: bool | str = True,
        thumbprint: str | None = None,
        timeout: float = 30.0,
        changed_extents: Iterable[Any] | None = None,
        readahead: int = 4,
        retries: int = 2,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SourceError(f"{url!r} is not an https:// address of a disk file.")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._https = parts.scheme == "https"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._where = f"{self.host}:{self.port}"
        self.display_path = unquote(parts.path)
        self.timeout = timeout
        self.retries = retries
        self.thumbprint = normalize_thumbprint(thumbprint) if thumbprint else None
        self._headers = {"User-Agent": USER_AGENT}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        if cookie:
            self._headers["Cookie"] = cookie
        self._user = auth[0] if auth else None
        self._context = self._tls_context(verify) if self._https else None
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.size = self._probe_size()
        self.changed_extents = None if changed_extents is None else validate_extents(changed_extents, self.size)
        self._readahead = _ReadAhead(self, readahead) if readahead > 0 else None

    # -- connections -------------------------------------------------------------------------

    def _tls_context(self, verify: bool | str) -> ssl.SSLContext:
        if self.thumbprint or verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # trust comes from the pin check after the handshake
            return context
        return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._connect(conn)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except ssl.SSLCertVerificationError as exc:
            raise SourceError(
                f"The TLS certificate of {self._where} is not trusted ({exc.verify_message}): "
                "give its SHA-256 thumbprint to pin it, or the CA bundle that signed it."
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise self._unreachable(exc) from None
        if self.thumbprint:
            der = conn.sock.getpeercert(binary_form=True)
            seen = hashlib.sha256(der).hexdigest()
            if seen != self.thumbprint:
                conn.close()
                raise SourceError(
                    f"The TLS certificate of {self._where} has SHA-256 thumbprint {_pretty(seen)}, "
                    f"not the pinned {_pretty(self.thumbprint)}: the host's certificate changed or "
                    "someone is intercepting; check the host and update the pinned thumbprint."
                )

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)

    def _unreachable(self, exc: BaseException) -> SourceUnreachable:
        if isinstance(exc, TimeoutError | socket.timeout):
            why = f"timed out after {self.timeout:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(exc, socket.gaierror):
            why = "name not resolved"
        else:
            why = str(exc) or type(exc).__name__
        return SourceUnreachable(
            f"Cannot reach {self._where} ({why}): check the host address, that its HTTPS service runs, "
            "and that the appliance's network can reach it."
        )

    # -- requests ----------------------------------------------------------------------------

    def _request(self, method: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send one request on this thread's connection; reconnect once if the server dropped it."""
        for attempt in range(self.retries + 1):
            conn = self._connection()
            try:
                conn.request(method, self._target, headers={**self._headers, **headers})
                response = conn.getresponse()
                self.requests += 1
                return response
            except _STALE + (TimeoutError, socket.timeout, OSError) as exc:
                self._drop_connection()
                if attempt == self.retries:
                    raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    def _check_status(self, response: http.client.HTTPResponse) -> None:
        status = response.status
        if status in (200, 206):
            return
        response.read()
        if status == 401:
            who = f"user {self._user!r}" if self._user else "the session cookie"
            raise SourceAuthFailed(
                f"{self._where} rejected the credentials of {who} (HTTP 401): check the user name and password."
            )
        if status == 403:
            raise SourceAuthFailed(
                f"{self._where} refused access to {self.display_path} (HTTP 403): "
                "give the user the Datastore.Browse privilege."
            )
        if status == 404:
            raise SourceNotFound(
                f"Disk file {self.display_path} was not found on {self._where} (HTTP 404): "
                "check the datastore, datacenter and file path (the VM may have been moved)."
            )
        raise SourceError(f"{self._where} answered HTTP {status} {response.reason} for {self.display_path}.")

    def _probe_size(self) -> int:
        response = self._request("HEAD", {})
        if response.status not in (405, 501):
            self._check_status(response)
            response.read()
            length = response.getheader("Content-Length")
            if length is not None and response.status == 200:
                return int(length)
        # HEAD not allowed or without a length: the total from a one-byte range answer
        response = self._request("GET", {"Range": "bytes=0-0"})
        if response.status == 416:
            response.read()
            total = (response.getheader("Content-Range") or "").rpartition("/")[2]
            return int(total) if total.isdigit() else 0
        self._check_status(response)
        response.read()
        total = (response.getheader("Content-Range") or "").rpartition("/")[2]
        if response.status != 206 or not total.isdigit():
            raise SourceError(
                f"{self._where} does not answer Range requests for {self.display_path}; it cannot be read."
            )
        return int(total)

    def fetch_into(self, offset: int, view: memoryview) -> int:
        """One Range GET filling `view` (its length is within the disk)."""
        want = len(view)
        if want == 0:
            return 0
        for attempt in range(self.retries + 1):
            response = self._request("GET", {"Range": f"bytes={offset}-{offset + want - 1}"})
            if response.status == 416:
                response.read()
                raise SourceError(
                    f"{self._where} says {self.display_path} ends before byte {offset + want} (HTTP 416): "
                    "the disk changed size during the backup; run it again."
                )
            self._check_status(response)
            if response.status == 200 and not (offset == 0 and response.length == want):
                self._drop_connection()  # the server ignored Range and is sending the whole file
                raise SourceError(f"{self._where} ignores Range requests for {self.display_path}; it cannot be read.")
            done = 0
            try:
                while done < want:
                    n = response.readinto(view[done:])
                    if not n:
                        break
                    done += n
            except _STALE + (TimeoutError, socket.timeout, OSError, http.client.IncompleteRead) as exc:
                self._drop_connection()
                if attempt == self.retries:
                    raise self._unreachable(exc) from None
                continue
            if done == want:
                return done
            self._drop_connection()
        raise SourceUnreachable(
            f"{self._where} closed the connection in the middle of {self.display_path} at offset {offset}: "
            "check the host and the network, then run the backup again."
        )

    # -- Source interface --------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, int]]:
        if self.changed_extents is not None:
            yield from self.changed_extents
        elif self.size:
            yield (0, self.size)  # a remote cannot tell holes; the pipeline skips zero chunks

    def read_into(self, offset: int, buf: memoryview) -> int:
        view = memoryview(buf).cast("B")[: max(0, min(len(buf), self.size - offset))]
        if self._readahead is not None:
            return self._readahead.read_into(offset, view)
        return self.fetch_into(offset, view)

    def close(self) -> None:
        if self._readahead is not None:
            self._readahead.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


class _ReadAhead:
    """Prefetches the next `depth` pieces after two consecutive reads, into reused buffers."""

    def __init__(self, source: HttpSource, depth: int):
        self.source = source
        self.depth = depth
        self.pool = ThreadPoolExecutor(depth, thread_name_prefix="http-readahead")
        self.pending: dict[tuple[int, int], Future] = {}
        self.free: list[bytearray] = []
        self.next_offset = -1
        self.lock = threading.Lock()

    def _fetch(self, offset: int, length: int) -> bytearray:
        with self.lock:
            buf = self.free.pop() if self.free else None
        if buf is None or len(buf) < length:
            buf = bytearray(length)
        self.source.fetch_into(offset, memoryview(buf)[:length])
        return buf

    def _release(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None:
            with self.lock:
                if len(self.free) < 2 * self.depth:
                    self.free.append(future.result())

    def read_into(self, offset: int, view: memoryview) -> int:
        length = len(view)
        with self.lock:
            future = self.pending.pop((offset, length), None)
            sequential = offset == self.next_offset
            self.next_offset = offset + length
            # parallel workers finish slightly out of order: keep pieces a little behind too
            low, high = offset - self.depth * length, offset + (self.depth + 1) * length
            stale = [self.pending.pop(k) for k in list(self.pending) if not low <= k[0] <= high]
            if sequential or future is not None:
                for k in range(1, self.depth + 1):
                    ahead = offset + k * length
                    if ahead >= self.source.size:
                        break
                    key = (ahead, min(length, self.source.size - ahead))
                    if key not in self.pending:
                        self.pending[key] = self.pool.submit(self._fetch, *key)
        for unused in stale:  # outside the lock: a finished future runs its callback right here
            if not unused.cancel():
                unused.add_done_callback(self._release)
        if future is None:
            return self.source.fetch_into(offset, view) if length else 0
        buf = future.result()
        view[:] = memoryview(buf)[:length]
        self._release(future)
        return length

    def close(self) -> None:
        with self.lock:
            for future in self.pending.values():
                future.cancel()
            self.pending.clear()
        self.pool.shutdown(wait=True)
