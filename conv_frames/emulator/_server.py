"""The emulator's HTTP/1.1 server: one request in, one answer (or fault) out.

Each request goes through the same steps: take the next request index, ask
the fault plan, check credentials, admit it under the account's limits, then
write the answer in a single ``send`` (headers and body together, so that
keep-alive clients never wait on Nagle's algorithm). Pages come from the
page cache, so a request costs little more than parsing and a socket write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qsl

from ._api import AUTHENTICATE, Api
from ._faults import Fault, FaultPlan
from ._limits import ConcurrencyLimit, RateLimit
from ._replies import (
    JSON,
    Body,
    Reply,
    html_gateway_page,
    html_login_page,
    twilio_error,
)

__all__ = ["EmulatorHTTPServer", "Journal", "LoggedRequest", "Runtime"]

logger = logging.getLogger("conv_frames.emulator")

#: Twilio's code for a rate-limited request.
TOO_MANY_REQUESTS = 20429

#: Twilio error codes the emulator sends with injected 5xx statuses.
SERVER_ERROR_CODES = {500: 20500, 502: 20502, 503: 20503, 504: 20504}

#: Largest request body read (and dropped) to keep a connection usable.
_MAX_DISCARDED_BODY = 1 << 20

_TRUNCATING_KINDS = frozenset({"reset_mid_body", "short_body"})


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the emulator received, as it answered it.

    Attributes:
        method: The HTTP method.
        path: The path, still percent-encoded, without the query string.
        query: The query parameters (the last value of a repeated name).
        status: The status sent, or 0 when no status line was sent.
        fault: The kind of the injected fault, if any.
        authorized: Whether the request carried accepted credentials.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None
    authorized: bool


class Journal:
    """Thread-safe record of requests: their indexes, log and fault counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._faults: Counter[str] = Counter()
        self._received = 0

    def next_index(self) -> int:
        """Return the 0-based index of a newly received request."""
        with self._lock:
            index = self._received
            self._received += 1
            return index

    def record(self, entry: LoggedRequest) -> None:
        """Append one answered request to the log."""
        with self._lock:
            self._entries.append(entry)
            if entry.fault is not None:
                self._faults[entry.fault] += 1

    def entries(self) -> list[LoggedRequest]:
        """Return a copy of the log, oldest first."""
        with self._lock:
            return list(self._entries)

    def fault_counts(self) -> dict[str, int]:
        """Return how many faults of each kind were injected."""
        with self._lock:
            return dict(self._faults)


class Runtime:
    """What every request handler shares: the API, the plan, limits and the log.

    Args:
        api: Routes and renders authorized requests.
        faults: The fault plan, if any.
        latency: Seconds waited before each answer.
        rate_limit: Requests per second the account may send, if limited.
        max_concurrency: Requests the account may have in flight, if limited.
    """

    def __init__(
        self,
        api: Api,
        *,
        faults: FaultPlan | None,
        latency: float,
        rate_limit: float | None,
        max_concurrency: int | None,
    ) -> None:
        self.api = api
        self.faults = faults
        self.latency = latency
        self.journal = Journal()
        self.stopping = threading.Event()
        self._rate = None if rate_limit is None else RateLimit(rate_limit)
        self._concurrency = (
            None if max_concurrency is None else ConcurrencyLimit(max_concurrency)
        )

    def delay(self) -> None:
        """Wait the configured latency, or less if the emulator stops."""
        if self.latency > 0:
            self.stopping.wait(self.latency)

    @contextlib.contextmanager
    def admission(self) -> Iterator[Reply | None]:
        """Admit one request under the account's limits.

        Yields:
            None when the request may proceed (its concurrency slot is held
            until the block ends), or the 429 answer that refuses it.
        """
        wait = None if self._rate is None else self._rate.acquire()
        if wait is not None:
            yield too_many_requests(wait)
            return
        if self._concurrency is None:
            yield None
            return
        if not self._concurrency.enter():
            yield too_many_requests(1)
            return
        try:
            yield None
        finally:
            self._concurrency.leave()


def too_many_requests(retry_after: int | None) -> Reply:
    """Return Twilio's 429, with ``Retry-After`` in seconds unless None."""
    headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
    return twilio_error(429, TOO_MANY_REQUESTS, "Too Many Requests", headers)


def fault_reply(fault: Fault) -> Reply:
    """Return the complete answer of a fault that sends one."""
    status = fault.status
    if fault.kind == "html_200":
        return html_login_page()
    if fault.kind == "empty_200" or status is None:
        return Reply(200, Body(b""), JSON)
    if status == 429:
        return too_many_requests_fault(fault)

    reason = HTTPStatus(status).phrase
    if fault.is_html:
        return html_gateway_page(status, reason)
    return twilio_error(status, SERVER_ERROR_CODES[status], reason)


def too_many_requests_fault(fault: Fault) -> Reply:
    """Return a 429 whose ``Retry-After`` takes the form the fault asks for."""
    if fault.retry_after_form == "absent":
        return too_many_requests(None)
    if fault.retry_after_form == "seconds":
        return too_many_requests(fault.retry_after)
    when = fault.retry_after_text
    if fault.retry_after_form == "http_date":
        when = formatdate(time.time() + fault.retry_after, usegmt=True)
    return twilio_error(
        429, TOO_MANY_REQUESTS, "Too Many Requests", (("Retry-After", when),)
    )


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that can drop its open connections on stop."""

    daemon_threads = True
    # The presence pool opens a connection per worker at once; socketserver's
    # backlog of 5 drops the rest of such a burst, and each dropped client
    # waits a second for its SYN to be sent again.
    request_queue_size = 128
    runtime: Runtime

    def __init__(self, address: tuple[str, int]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which may
        # ask a DNS server; the emulator needs no name and sends no traffic.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        """Add or remove a connection from the set closed by :meth:`drop_all`."""
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_all(self) -> None:
        """Shut every open connection, waking handlers that wait on a client."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that go away mid-answer are routine here; stay quiet.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    _pending: LoggedRequest | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        runtime = self.server.runtime
        index = runtime.journal.next_index()
        path, _, query_string = self.path.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        authorized = runtime.api.is_authorized(self.headers.get("Authorization"))
        self._discard_body()
        fault = None if runtime.faults is None else runtime.faults.fault_for(index)

        kind = None if fault is None else fault.kind
        self._pending = LoggedRequest(self.command, path, query, 0, kind, authorized)
        try:
            self._answer(runtime, fault, path, query, authorized)
        finally:
            self._log(0)  # only if nothing was sent: sending logs the request

    def _log(self, status: int) -> None:
        """Log the request with the status about to be sent (0 for none).

        Logging comes before the write, so a client holding its answer always
        finds its request in :attr:`Emulator.requests`.
        """
        entry, self._pending = self._pending, None
        if entry is None:
            return
        self.server.runtime.journal.record(dataclasses.replace(entry, status=status))
        logger.debug(
            "%s %s -> %s (fault: %s)", entry.method, entry.path, status, entry.fault
        )

    def _answer(
        self,
        runtime: Runtime,
        fault: Fault | None,
        path: str,
        query: dict[str, str],
        authorized: bool,
    ) -> None:
        """Send the answer to one request, or the fault that replaces it."""
        if fault is not None and fault.kind == "stall":
            if runtime.stopping.wait(fault.seconds):
                self.close_connection = True
                return
            fault = None
        if fault is not None and fault.kind not in _TRUNCATING_KINDS:
            self._inject(runtime, fault)
            return
        if not authorized:
            self._send(runtime, AUTHENTICATE)
            return

        with runtime.admission() as refusal:
            reply = refusal or runtime.api.answer(self.command, path, query)
            self._send(runtime, reply, fault)

    def _inject(self, runtime: Runtime, fault: Fault) -> None:
        if fault.kind != "reset_before_body":
            self._send(runtime, fault_reply(fault))
            return
        runtime.delay()
        self._log(0)
        self._reset()

    def _send(self, runtime: Runtime, reply: Reply, fault: Fault | None = None) -> None:
        """Write ``reply``, cut short if ``fault`` says so."""
        body, headers = self._encode(reply)
        length = len(body)
        if fault is not None and fault.kind == "reset_mid_body":
            body = body[: int(length * fault.fraction)]
        elif fault is not None:  # short_body: announce more than is sent
            length += max(1, length // 2)
        if fault is not None:
            self.close_connection = True

        runtime.delay()
        head = self._head(reply.status, reply.content_type, length, headers)
        self._log(reply.status)
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True

    def _encode(self, reply: Reply) -> tuple[bytes, list[tuple[str, str]]]:
        headers = list(reply.headers)
        if not reply.compressible:
            return reply.body.raw, headers
        headers.append(("Vary", "Accept-Encoding"))
        if not accepts_gzip(self.headers.get("Accept-Encoding")):
            return reply.body.raw, headers
        headers.append(("Content-Encoding", "gzip"))
        return reply.body.gzipped(), headers

    def _head(
        self,
        status: int,
        content_type: str,
        length: int,
        headers: list[tuple[str, str]],
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Date: {_http_date(int(time.time()))}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reset(self) -> None:
        """Abort the connection with a TCP RST, sending nothing."""
        self.close_connection = True
        connection = self.connection
        with contextlib.suppress(OSError):
            linger = struct.pack("ii", 1, 0)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        # The request reader still holds the socket, so close() would wait for
        # it; detaching closes the descriptor now, and linger 0 makes it a RST.
        os.close(connection.detach())

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else 0
        if size > _MAX_DISCARDED_BODY:
            self.close_connection = True
        elif size:
            self.rfile.read(size)


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip (q above 0)."""
    if not header:
        return False
    wildcard = False
    for item in header.lower().split(","):
        name, _, parameters = item.partition(";")
        name = name.strip()
        if name in ("gzip", "x-gzip", "*"):
            quality = _quality(parameters)
            if name != "*":
                return quality > 0
            wildcard = quality > 0
    return wildcard


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    return formatdate(second, usegmt=True)
