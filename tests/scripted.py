"""A tiny HTTP server for tests that answers each request from a script.

The i-th request gets ``steps[i]`` (then ``default``, if set), and every
request is recorded. It binds 127.0.0.1 on a free port and stops with the
``with`` block.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from urllib3.connection import HTTPConnection


@dataclass
class Step:
    """How to answer one request.

    ``json`` or ``body`` is the payload; ``{BASE}`` in it becomes the server's
    base URL. ``delay_s`` waits before the status line; ``truncate_after``
    sends only that many body bytes, then closes; ``chunked`` uses chunked
    transfer encoding; ``reset`` closes the socket without answering.
    """

    status: int = 200
    json: Any = None
    body: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate_after: int | None = None
    chunked: bool = False
    reset: bool = False


@dataclass
class Recorded:
    """A request as the server saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def target(self) -> str:
        """Path and query, for comparing requests."""
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.query.items())


class ScriptedServer:
    """Serve ``steps`` in order on 127.0.0.1; record what arrives."""

    def __init__(
        self,
        steps: list[Step],
        default: Step | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.steps = list(steps)
        self.default = default
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:  # HTTPS: each connection's handshake as it is accepted
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.base_url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _next_step(self, recorded: Recorded) -> Step:
        with self._lock:
            index = len(self.requests)
            self.requests.append(recorded)
        if index < len(self.steps):
            return self.steps[index]
        if self.default is not None:
            return self.default
        return Step(404, json={"code": 20404, "message": "unscripted request"})

    def _payload(self, step: Step) -> bytes:
        if step.json is not None:
            text = json.dumps(step.json)
        elif isinstance(step.body, bytes):
            return step.body
        else:
            text = step.body or ""
        return text.replace("{BASE}", self.base_url).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                recorded = Recorded(
                    parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items())
                )
                step = server._next_step(recorded)
                if step.delay_s and server._stop.wait(step.delay_s):
                    return
                if step.reset:
                    self._reset()
                    return
                self._answer(step, server._payload(step))

            def _answer(self, step: Step, payload: bytes) -> None:
                self.send_response(step.status)
                headers = {"Content-Type": "application/json", **step.headers}
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value.replace("{BASE}", server.base_url))
                if step.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    length = headers.get("Content-Length", str(len(payload)))
                    self.send_header("Content-Length", length)
                self.end_headers()
                cut = step.truncate_after
                if step.chunked:
                    self.wfile.write(f"{len(payload):x}\r\n".encode())
                    self.wfile.write(payload[:cut] if cut is not None else payload)
                    if cut is None:
                        self.wfile.write(b"\r\n0\r\n\r\n")
                else:
                    self.wfile.write(payload[:cut] if cut is not None else payload)
                self.wfile.flush()
                if cut is not None:
                    self._reset()

            def _reset(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        return Handler


SERVICE_SID = "IS5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
ACCOUNT_SID = "ACa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
AUTH_TOKEN = "tok_FAKE_do_not_use_0000"
ROLE_SID = "RLc3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
USERS_PATH = f"/v1/Services/{SERVICE_SID}/Users"


def user_sid(number: int) -> str:
    """The SID of the numbered test user."""
    return f"US{number:032x}"


def user_record(number: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid list-endpoint user record, numbered, with fields overridden."""
    sid = user_sid(number)
    record: dict[str, Any] = {
        "sid": sid,
        "account_sid": ACCOUNT_SID,
        "chat_service_sid": SERVICE_SID,
        "role_sid": ROLE_SID,
        "identity": f"agent-{number:03d}",
        "friendly_name": f"Agent {number:03d}",
        "attributes": '{ "duty": "agent" }',
        "is_online": None,
        "is_notifiable": None,
        "date_created": "2020-03-24T20:38:21Z",
        "date_updated": "2020-03-24T20:38:21Z",
        "url": f"https://conversations.twilio.com{USERS_PATH}/{sid}",
        "links": {
            "user_conversations": (
                f"https://conversations.twilio.com{USERS_PATH}/{sid}/Conversations"
            )
        },
    }
    record.update(overrides)
    return record


def users_page(
    users: list[dict[str, Any]],
    *,
    page: int = 0,
    page_size: int = 2,
    next_page_url: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """A list page envelope as Twilio sends it; ``{BASE}`` marks the server."""
    first = f"{{BASE}}{USERS_PATH}?PageSize={page_size}&Page=0"
    return {
        "meta": {
            "page": page,
            "page_size": page_size,
            "first_page_url": first,
            "previous_page_url": None,
            "url": url or f"{{BASE}}{USERS_PATH}?PageSize={page_size}&Page={page}",
            "next_page_url": next_page_url,
            "key": "users",
        },
        "users": users,
    }


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's JSON error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def count_connections(monkeypatch: Any) -> list[HTTPConnection]:
    """Record every urllib3 connection opened from now on (a pytest monkeypatch)."""
    connect = HTTPConnection.connect
    opened: list[HTTPConnection] = []

    def counting(connection: HTTPConnection) -> None:
        opened.append(connection)
        connect(connection)

    monkeypatch.setattr(HTTPConnection, "connect", counting)
    return opened
