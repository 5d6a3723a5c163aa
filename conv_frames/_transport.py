"""One GET of one page: auth, timeouts, the retry policy and error mapping.

This is the single boundary where requests', urllib3's and tenacity's
exceptions become conv_frames errors. A retried request is exactly the same URL
again.

Two lanes carry a GET. The transport's own session sends straight through one
urllib3 pool manager, built once with the TLS settings requests would use:
that skips requests' per-call work (merging settings, scanning the proxy
environment, preparing and wrapping), which costs more than the page's own
parsing on a fast link (#4). A session the caller passes in, or an origin that
an environment proxy applies to, goes through requests as before. Both lanes
report failures with the same messages.

Before each retry the transport tells its ``on_retry`` hook why it retries
and how long it waits, as a :class:`RetryEvent`; by default the hook logs one
WARNING. The presence pool passes its own, to tell a 429 (too many requests
in flight) from a fault that is only retried (#5).

A thread blocked in a socket read sees no event, so a load abandoned while the
server stalls would wait out the read timeout. :meth:`Transport.aborting`
ties the transport to a load's :class:`CancelEvent`: setting it shuts down the
sockets of the own lane's connections from the setting thread, the read ends
at once, and the load fails as abandoned. The requests lane (a caller's
session, or a proxy) keeps to its timeouts.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.client import HTTPException
from typing import Any, Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit

import orjson
import requests
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from ._config import Credentials, _is_loopback
from ._errors import APIError, RequestTimeout, SchemaError, TransportError

__all__ = [
    "CancelEvent",
    "LoadStats",
    "RetryEvent",
    "RetryPolicy",
    "SentRequest",
    "Transport",
    "describe_fault",
    "log_retry",
    "parse_retry_after",
    "redact_url",
]

logger = logging.getLogger(__name__)

Timeout = float | tuple[float, float]
_Connection = TypeVar("_Connection")
Sleep = Callable[[float], None]

#: How often a retry wait looks whether a run of loads was abandoned.
_CANCEL_POLL_SECONDS = 0.25
_USER_AGENT = "conv-frames/0.1 (+python-requests)"
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


class RequestLimit(Protocol):
    """Slots for requests in flight, shared by transports (an ``AdaptiveLimit``)."""

    def acquire(self) -> Any:
        """Wait for a slot; return a ticket to give back."""

    def release(self, ticket: Any, answer: Any, *, wake: bool = False) -> None:
        """Give the slot back: ``"clean"``, ``"pushback"`` (429) or ``"none"``."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a transient fault becomes an error.

    Attributes:
        max_attempts: Requests per URL, the first one included.
        max_retry_wait: Longest single wait in seconds, ``Retry-After`` included.
        max_total_wait: Budget of waiting for one URL, in seconds.
        backoff_initial: First backoff wait in seconds, doubled each retry.
        backoff_jitter: Up to this many random seconds added to each backoff.
    """

    max_attempts: int = 5
    max_retry_wait: float = 60.0
    max_total_wait: float = 300.0
    backoff_initial: float = 0.5
    backoff_jitter: float = 0.5


@dataclass(frozen=True)
class RetryEvent:
    """A request that failed and is sent again after a wait, as ``on_retry`` sees it.

    Attributes:
        url: The URL, without credentials.
        reason: What failed: ``"HTTP 503"`` for a status, else the error's
            class (``"RequestTimeout"``, ``"TransportError"``).
        status: The HTTP status, or None when no usable answer came.
        attempt: The attempt that failed, counted from 1.
        max_attempts: Attempts the policy allows for this URL.
        wait: Seconds waited before the next attempt: what the server asked
            for in ``Retry-After``, or the backoff, capped by ``max_retry_wait``.
    """

    url: str
    reason: str
    status: int | None
    attempt: int
    max_attempts: int
    wait: float

    @property
    def pushback(self) -> bool:
        """Whether the server refused the request as one too many (429)."""
        return self.status == 429


RetryHook = Callable[[RetryEvent], None]


def log_retry(event: RetryEvent) -> None:
    """The default ``on_retry``: one WARNING line per retry."""
    logger.warning(
        "retrying after %s (attempt %d of %d, waiting %.2f s): %s",
        event.reason,
        event.attempt,
        event.max_attempts,
        event.wait,
        event.url,
    )


class CancelEvent(threading.Event):
    """An event that also runs callbacks, in the thread that sets it.

    Threads that wait for the event see it; a thread blocked in a socket read
    does not, and a callback (:meth:`Transport.abort`) ends that read.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []
        self._guard = threading.Lock()

    def set(self) -> None:
        """Set the event, then run the callbacks registered at that moment."""
        super().set()
        with self._guard:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    @contextmanager
    def calling(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback`` when the event is set inside the block, or at once."""
        with self._guard:
            self._callbacks.append(callback)
        try:
            if self.is_set():
                callback()
            yield
        finally:
            with self._guard:
                self._callbacks.remove(callback)


@dataclass
class LoadStats:
    """Counters of one load, reported in ``DataFrame.attrs`` and the CLI summary."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    #: Set (from any thread) to abandon the load: a retry wait ends at once, no
    #: further request is sent, and the request on the wire is cut. The walk
    #: runs in the caller's thread, so a load's own failure needs no event.
    cancelled: CancelEvent = field(default_factory=CancelEvent)
    #: The same, for a run of several loads that another thread may abandon;
    #: a :class:`CancelEvent` also ends the request on the wire.
    run_cancelled: threading.Event | None = None

    def abandoned(self) -> bool:
        """Whether this load, or the run it belongs to, was abandoned."""
        run = self.run_cancelled
        return self.cancelled.is_set() or (run is not None and run.is_set())


class _Opened:
    """The live connections of one lane, weakly held; threads add as they open."""

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._guard = threading.Lock()

    def add(self, connection: _Connection) -> _Connection:
        with self._guard:
            self._connections.add(connection)
        return connection

    def shut_down(self) -> None:
        """Shut the sockets down, both ways: a blocked read returns at once."""
        with self._guard:
            connections = list(self._connections)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if sock is None:
                continue  # not connected yet, or closed
            with suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class _Answer:
    """What one GET brought back, whichever lane carried it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """A pooled session that GETs JSON with retries, for one set of credentials.

    Args:
        credentials: The basic-auth pair sent with every request.
        timeout: Seconds for connect and each read: one number or a pair.
        retry: How hard to try before a transient fault becomes an error.
        sleep: Waits between attempts (tests pass a recorder).
        session: A caller's session to send through, lent and left unchanged.
        on_retry: Told of each retry before its wait; by default
            :func:`log_retry`.
        connections: Connections the transport's own lane keeps open to an
            origin: one per thread that sends through it at once.
        limit: Slots shared with other transports of the account: each
            request holds one while on the wire (not while waiting to
            retry), and a 429 tells the limit to shrink.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: Timeout,
        retry: RetryPolicy,
        sleep: Sleep = time.sleep,
        session: requests.Session | None = None,
        on_retry: RetryHook = log_retry,
        connections: int = 1,
        limit: RequestLimit | None = None,
    ) -> None:
        self.timeout = timeout
        self._limit = limit
        self.retry = retry
        self._sleep = sleep
        self._on_retry = on_retry
        # Auth and headers go with each request, so a session the caller lends
        # is never changed: it must not carry the credentials anywhere after.
        self._auth = _BasicAuth(credentials)
        self._headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        self._owns_session = session is None
        self._session = session or requests.Session()
        if self._owns_session:
            self._session.auth = self._auth
            self._session.headers.update(self._headers)
        self._lane = (
            _DirectLane(self._session, timeout, connections)
            if self._owns_session
            else None
        )
        self._retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(retry.max_attempts)
            | _stop_after_total_wait(retry.max_total_wait),
            wait=_wait_retry_after(
                wait_exponential_jitter(
                    multiplier=retry.backoff_initial,
                    max=retry.max_retry_wait,
                    jitter=retry.backoff_jitter,
                ),
                cap=retry.max_retry_wait,
            ),
            sleep=sleep,
            reraise=True,
        )

    def __repr__(self) -> str:
        return f"<Transport timeout={self.timeout!r} retry={self.retry!r}>"

    def close(self) -> None:
        """Release the pooled connections."""
        if self._lane is not None:
            self._lane.close()
        if self._owns_session:
            self._session.close()

    def abort(self) -> None:
        """End the requests the own lane has on the wire; callable from any thread.

        Each fails as a broken connection, and an idle connection is opened
        again on its next use. A caller's session or a proxy is not reached:
        its requests end within their timeout.
        """
        if self._lane is not None:
            self._lane.abort()

    @contextmanager
    def aborting(self, stats: LoadStats) -> Iterator[None]:
        """Inside, abandoning the load of ``stats`` (or its run) aborts requests.

        Only a :class:`CancelEvent` can call back; a plain ``threading.Event``
        as ``run_cancelled`` is seen before the next request, as before.
        """
        with ExitStack() as stack:
            for event in (stats.cancelled, stats.run_cancelled):
                if isinstance(event, CancelEvent):
                    stack.enter_context(event.calling(self.abort))
            yield

    def get_json(
        self, url: str, stats: LoadStats, *, sent: SentRequest | None = None
    ) -> Any:
        """GET ``url`` and decode its JSON body, retrying transient faults.

        Requests and retries are counted in ``stats``.

        Args:
            url: What to GET.
            stats: The load's counters, and whether it was abandoned.
            sent: The request for ``url`` already on the wire (from
                :meth:`send`): its answer is the first attempt's.

        Raises:
            APIError: An error status, after retries when it was transient.
            TransportError: The network failed or the body was not JSON.
            SchemaError: The body was JSON but nested beyond what can be decoded.
        """

        # The first attempt runs bare: most requests succeed at once, and
        # tenacity's machinery costs more than a page on a fast link (#4).
        try:
            if sent is None:
                return self._get_once(url, stats)
            return self._answer(sent, url, stats)
        except (APIError, TransportError) as error:
            if not _is_transient(error):
                error.attempts = 1
                raise
            failed: list[BaseException] = [error]

        def attempt() -> Any:
            if failed:  # tenacity's first attempt is the one that just failed
                raise failed.pop()
            return self._get_once(url, stats)

        def before_sleep(state: RetryCallState) -> None:
            stats.retries += 1
            self._on_retry(self._retry_event(state))

        retrying = self._retrying.copy(
            before_sleep=before_sleep, sleep=self._sleep_unless_cancelled(stats)
        )
        try:
            return retrying(attempt)
        except (APIError, TransportError) as error:
            error.attempts = int(retrying.statistics.get("attempt_number", 1))
            raise

    def send(self, url: str, stats: LoadStats) -> SentRequest | None:
        """Put a GET of ``url`` on the wire and return without its answer.

        Pass the result to :meth:`get_json` as ``sent`` to read the answer,
        or call its ``discard()``. Returns None (send nothing) when the load
        was abandoned, when the request would go through requests (a caller's
        session, a proxy), or when requests share a limit, which holds a slot
        only while a request is being answered.
        """
        if self._lane is None or self._limit is not None or stats.abandoned():
            return None
        shown = redact_url(url)
        sent = self._lane.send(url, shown)
        if sent is not None:
            stats.requests += 1
        return sent

    def _sleep_unless_cancelled(self, stats: LoadStats) -> Sleep:
        if self._sleep is not time.sleep:
            return self._sleep  # a caller's own sleep (tests record the waits)

        def sleep(seconds: float) -> None:
            # Ends early when the load or its run is abandoned.
            deadline = time.monotonic() + seconds
            while not stats.abandoned():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                stats.cancelled.wait(min(remaining, _CANCEL_POLL_SECONDS))

        return sleep

    def _get_once(self, url: str, stats: LoadStats) -> Any:
        if self._limit is None:
            return self._get_now(url, stats)
        ticket = self._limit.acquire()
        answer = "none"  # a 503 or a reset says nothing about the limit
        try:
            body = self._get_now(url, stats)
            answer = "clean"
            return body
        except APIError as error:
            if error.status == 429:
                answer = "pushback"
            elif not error.is_transient:
                answer = "clean"
            raise
        finally:
            self._limit.release(ticket, answer, wake=True)

    def _get_now(self, url: str, stats: LoadStats) -> Any:
        shown = redact_url(url)
        if stats.abandoned():
            raise _abandoned(shown)
        sent = None if self._lane is None else self._lane.send(url, shown)
        stats.requests += 1
        if sent is not None:
            return self._answer(sent, url, stats)
        # A session of the caller's, or a proxy on the way.
        return self._check(self._get_with_session(url, shown), shown)

    def _answer(self, sent: SentRequest, url: str, stats: LoadStats) -> Any:
        """Read the answer to a request on the wire, and decode it."""
        if stats.abandoned():
            sent.discard()
            raise _abandoned(sent.shown)
        try:
            answer = sent.receive()
        except TransportError as error:
            if stats.abandoned():  # aborted, most likely: not a fault to retry
                raise _abandoned(sent.shown) from error
            raise
        return self._check(answer, sent.shown)

    @staticmethod
    def _check(answer: _Answer, shown: str) -> Any:
        logger.debug("GET %s -> %d (%d bytes)", shown, answer.status, len(answer.body))
        if answer.status != 200:
            raise _status_error(answer, shown)
        return _decode_body(answer, shown)

    def _get_with_session(self, url: str, shown: str) -> _Answer:
        try:
            response = self._session.get(
                url,
                timeout=self.timeout,
                allow_redirects=False,
                auth=self._auth,
                headers=self._headers,
            )
        except requests.RequestException as error:
            raise _network_error(error, shown) from error
        return _Answer(response.status_code, response.headers, response.content)

    def _retry_event(self, state: RetryCallState) -> RetryEvent:
        error = state.outcome.exception() if state.outcome else None
        return RetryEvent(
            url=getattr(error, "url", "?"),
            reason=describe_fault(error),
            status=error.status if isinstance(error, APIError) else None,
            attempt=state.attempt_number,
            max_attempts=self.retry.max_attempts,
            wait=state.next_action.sleep if state.next_action else 0.0,
        )


def parse_retry_after(
    value: str | None, *, now: datetime | None = None
) -> float | None:
    """Read a ``Retry-After`` header as seconds to wait, or None if unusable.

    Both forms of RFC 9110 are read: delay-seconds (fractions tolerated) and an
    HTTP date. A date in the past gives 0. Negative numbers, ``inf``/``nan`` and
    any other text are unusable, so the caller falls back to its backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def redact_url(url: str) -> str:
    """Drop user info from a URL so it can be logged or put in a message."""
    if "@" not in url:
        return url  # no user info; the common case, called on every request
    # Plain string work: a URL from a server may hold a port or a host that
    # urllib refuses to parse, and the message about it must still be built.
    scheme, separator, rest = url.partition("://")
    if separator:
        prefix = scheme + separator
    elif url.startswith("//"):
        prefix, rest = "//", url[2:]
    else:
        return url  # a relative reference has no authority to hide
    authority = re.match(r"[^/?#]*", rest)
    end = authority.end() if authority else 0
    return prefix + rest[:end].rpartition("@")[2] + rest[end:]


class _BasicAuth(requests.auth.AuthBase):
    """Basic auth with the header built once; its repr hides the secret."""

    def __init__(self, credentials: Credentials) -> None:
        self._header = requests.auth._basic_auth_str(
            credentials.username, credentials.password
        )
        self._username = credentials.username

    @property
    def header(self) -> str:
        """The ``Authorization`` header value."""
        return self._header

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return f"<BasicAuth username={self._username!r} password='***'>"


class SentRequest:
    """A GET on the wire whose answer nobody has read yet.

    Made by :meth:`Transport.send` and read by :meth:`Transport.get_json`, or
    dropped with :meth:`discard` (which does nothing once it was read). A
    failure while sending is kept and raised by :meth:`receive`, inside the
    retry loop of the request it belongs to.
    """

    def __init__(
        self,
        origin: _Origin,
        connection: HTTPConnection,
        shown: str,
        error: BaseException | None = None,
    ) -> None:
        self.origin = origin
        self.connection = connection
        self.shown = shown
        self.error = error
        self._settled = False

    def receive(self) -> _Answer:
        """Read the answer; the connection goes back to the origin once read."""
        self._settled = True
        return self.origin.receive(self)

    def discard(self) -> None:
        """Drop the request: its connection is closed with the answer unread.

        Once the answer was read the connection is the origin's again, and may
        carry another thread's request: there is nothing left to drop.
        """
        if not self._settled:
            self._settled = True
            self.connection.close()


class _Origin:
    """The connections kept open to one origin, and the headers sent there.

    Each request takes an idle connection (or opens one), and gives it back
    once its answer is read: at most ``keep`` are kept idle, one per thread
    that sends at once. A connection the server closed while idle is opened
    again before it is used.
    """

    def __init__(
        self,
        connection_class: type[HTTPConnection],
        host: str,
        port: int | None,
        headers: dict[str, str],
        options: dict[str, Any],
        timeout: tuple[float, float],
        keep: int,
    ) -> None:
        self.headers = headers
        self.opened = _Opened()
        self._open = partial(connection_class, host, port, **options)
        self._connect_timeout, self._read_timeout = timeout
        self._keep = keep
        self._idle: list[HTTPConnection] = []
        self._guard = threading.Lock()
        # An origin dropped without close() still closes what it kept open.
        weakref.finalize(self, _close_all, self._idle)

    def send(self, target: str, shown: str) -> SentRequest:
        """Put a GET of ``target`` on the wire and return at once."""
        with self._guard:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self.opened.add(self._open(timeout=self._connect_timeout))
        elif not connection.is_connected:
            connection.close()  # the server closed it while idle: open it again
        connection.timeout = self._connect_timeout
        try:
            connection.request(
                "GET", target, headers=self.headers, preload_content=False
            )
        except (urllib3.exceptions.HTTPError, OSError, HTTPException) as error:
            connection.close()
            return SentRequest(self, connection, shown, error)
        connection.timeout = self._read_timeout
        return SentRequest(self, connection, shown)

    def receive(self, sent: SentRequest) -> _Answer:
        """Read the answer to ``sent``, then keep its connection for reuse."""
        connection = sent.connection
        try:
            try:
                if sent.error is not None:
                    raise sent.error
                response = connection.getresponse()
            except (urllib3.exceptions.HTTPError, OSError, HTTPException) as error:
                raise _network_error(_as_requests_error(error), sent.shown) from error
            try:
                body = response.read(decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                cause = _as_requests_error(error, reading_body=True)
                raise _network_error(cause, sent.shown) from error
        except BaseException:
            connection.close()
            raise
        with self._guard:
            kept = len(self._idle) < self._keep
            if kept:
                self._idle.append(connection)
        if not kept:
            connection.close()
        return _Answer(response.status, response.headers, body)

    def close(self) -> None:
        """Close the idle connections."""
        with self._guard:
            _close_all(self._idle)


def _close_all(connections: list[HTTPConnection]) -> None:
    while connections:
        connections.pop().close()


class _DirectLane:
    """The fast lane: GETs over urllib3 connections kept open, set up once.

    It sends what requests sends for the transport's own session (the same
    headers and auth, TLS checked against the same CA bundle) without the work
    requests, and urllib3's pool, repeat on every call. Sending and reading
    are apart, so a walk can put the next page's request on the wire before
    it works on this page. Compressed answers are asked for except on
    loopback, where there is no bandwidth to save and inflating costs more
    than it spares. An origin that an environment proxy applies to is left to
    requests, which knows how to reach it.
    """

    def __init__(
        self, session: requests.Session, timeout: Timeout, connections: int
    ) -> None:
        self._session = session
        self._timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._connections = connections
        # Per origin: its connections and headers, or None for requests.
        self._origins: dict[tuple[str, str], _Origin | None] = {}
        self._opening = threading.Lock()  # threads may share the lane (presence)

    def send(self, url: str, shown: str) -> SentRequest | None:
        """Put a GET on the wire, or return None if this lane does not serve the origin.

        Whether it does is decided on the first request to each origin.
        Redirects are never followed.
        """
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._origins:
            with self._opening:
                if key not in self._origins:
                    self._origins[key] = self._open(url, parts)
        origin = self._origins[key]
        if origin is None:
            return None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # Encoded as requests encodes it: http.client refuses a space, a
        # control character or a non-ASCII one in the request line.
        return origin.send(requests.utils.requote_uri(target), shown)

    def close(self) -> None:
        """Close the connections kept open."""
        for origin in list(self._origins.values()):
            if origin is not None:
                origin.close()

    def abort(self) -> None:
        """Shut down the sockets of every connection the lane has open."""
        for origin in list(self._origins.values()):
            if origin is not None:
                origin.opened.shut_down()

    def _open(self, url: str, parts: SplitResult) -> _Origin | None:
        """Set up the lane to ``url``'s origin, or None to leave it to requests."""
        session = self._session
        settings = session.merge_environment_settings(url, {}, None, None, None)
        if requests.utils.select_proxy(url, settings["proxies"]):
            return None
        headers = {name: str(value) for name, value in session.headers.items()}
        if isinstance(session.auth, _BasicAuth):
            headers["Authorization"] = session.auth.header
        host = parts.hostname or ""
        if _is_loopback(host):
            headers["Accept-Encoding"] = "identity"
        if parts.scheme == "https":
            connection_class: type[HTTPConnection] = HTTPSConnection
            options = _tls_options(settings["verify"])
        else:
            connection_class, options = HTTPConnection, {}
        return _Origin(
            connection_class,
            host,
            parts.port,
            headers,
            options,
            self._timeout,
            self._connections,
        )


def _tls_options(verify: bool | str | None) -> dict[str, Any]:
    """Pool options for requests' ``verify`` setting, as its adapter reads it."""
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    if verify is True or verify is None:
        verify = requests.utils.DEFAULT_CA_BUNDLE_PATH
    where = "ca_cert_dir" if os.path.isdir(verify) else "ca_certs"
    return {"cert_reqs": "CERT_REQUIRED", where: verify}


def _as_requests_error(
    error: Exception, *, reading_body: bool = False
) -> requests.RequestException:
    """The error requests raises for a urllib3, http.client or socket ``error``.

    The fast lane translates through this so that both lanes report a fault
    with the same words. Once the headers are in (``reading_body``), requests
    names a broken connection a ChunkedEncodingError and bad compression a
    ContentDecodingError.
    """
    errors = urllib3.exceptions
    if isinstance(error, errors.ReadTimeoutError):
        return requests.ReadTimeout(error)
    if isinstance(error, errors.NewConnectionError):
        return requests.ConnectionError(error)
    if isinstance(error, errors.ConnectTimeoutError):
        return requests.ConnectTimeout(error)
    if isinstance(error, errors.SSLError | ssl.SSLError | ssl.CertificateError):
        return requests.exceptions.SSLError(error)
    if reading_body and isinstance(error, errors.DecodeError):
        return requests.exceptions.ContentDecodingError(error)
    if reading_body and isinstance(error, errors.ProtocolError):
        return requests.exceptions.ChunkedEncodingError(error)
    if isinstance(error, errors.InvalidHeader):
        return requests.exceptions.InvalidHeader(error)
    if isinstance(error, TimeoutError):  # the socket's own, waiting for the headers
        return requests.ReadTimeout(error)
    return requests.ConnectionError(error)


class _stop_after_total_wait(stop_base):
    """Stop when the next wait would take the total wait past ``budget`` seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.budget


class _wait_retry_after(wait_base):
    """Wait what the server asked for in ``Retry-After``, else the fallback, capped."""

    def __init__(self, fallback: wait_base, *, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(error, "retry_after", None)
        wait = self.fallback(retry_state) if asked is None else asked
        return min(max(wait, 0.0), self.cap)


def _abandoned(url: str) -> TransportError:
    return TransportError("load abandoned", url=url, transient=False)


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, APIError):
        return error.is_transient
    return isinstance(error, TransportError) and error.transient


def _network_error(error: requests.RequestException, url: str) -> TransportError:
    if isinstance(error, requests.Timeout) or _caused_by_read_timeout(error):
        return RequestTimeout("request timed out waiting for the server", url=url)
    refusal = _certificate_refusal(error)
    if refusal is not None:
        # The same certificate is refused however often it is asked for.
        return TransportError(
            f"the server's TLS certificate was refused ({refusal}), so nothing "
            "was sent; check base_url, or set REQUESTS_CA_BUNDLE to the CA "
            "bundle that signs the server's certificate",
            url=url,
            transient=False,
        )
    reason = type(error).__name__
    transient = isinstance(
        error,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    )
    return TransportError(
        f"request failed on the network ({reason})", url=url, transient=transient
    )


def _certificate_refusal(error: BaseException) -> str | None:
    """Why the server's certificate was refused, if that is what ``error`` is.

    Both lanes wrap the ``ssl`` error: requests in urllib3's errors (as
    arguments), the own lane as the cause. The reason is OpenSSL's, such as
    "self-signed certificate" or a host name that does not match.
    """
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending:
        found = pending.pop()
        if id(found) in seen or not isinstance(found, BaseException):
            continue
        seen.add(id(found))
        if isinstance(found, ssl.SSLCertVerificationError):
            return str(found.verify_message or found.reason or "not trusted").rstrip(
                "."
            )
        if isinstance(found, HostnameMismatch):  # urllib3's own host name check
            return str(found).rstrip(".")
        pending.extend(found.args)
        pending.extend((found.__cause__, found.__context__))
        pending.append(getattr(found, "reason", None))
    return None


def _caused_by_read_timeout(error: BaseException) -> bool:
    # requests reports a read timeout while streaming the body as a
    # ConnectionError wrapping urllib3's ReadTimeoutError.
    return any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in error.args
    )


def _status_error(response: _Answer, url: str) -> APIError:
    status = response.status
    if 300 <= status < 400:
        location = redact_url(response.headers.get("Location", "(no Location header)"))
        return APIError(
            status,
            f"redirect to {location} not followed: credentials are only sent to the "
            "origin the load started on; point base_url at the final host instead",
            url=url,
        )
    payload = _error_payload(response)
    error = APIError(
        status,
        str(payload.get("message") or _describe_body(response)),
        url=url,
        code=_int_or_none(payload.get("code")),
        more_info=payload.get("more_info")
        if isinstance(payload.get("more_info"), str)
        else None,
    )
    error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error


def _decode_body(response: _Answer, url: str) -> Any:
    body = response.body
    if not body or body.isspace():  # not strip(): that copies every page
        raise TransportError(
            "HTTP 200 answer has an empty body, not JSON", url=url, transient=True
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):
            # Complete, well-formed so far, and too deep: retrying cannot help.
            raise SchemaError(
                f"the page from {url} nests JSON deeper than can be "
                "decoded (1024 levels)"
            ) from None
        raise TransportError(
            f"HTTP 200 answer is not JSON ({_describe_body(response)})",
            url=url,
            transient=True,
        ) from None


def _error_payload(response: _Answer) -> dict[str, Any]:
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _describe_body(response: _Answer) -> str:
    kind = response.headers.get("Content-Type", "no Content-Type")
    return f"{len(response.body)} bytes of {kind}"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe_fault(error: BaseException | None) -> str:
    """Name a failure briefly: ``"HTTP 503"``, or the error's class."""
    if isinstance(error, APIError):
        return f"HTTP {error.status}"
    return type(error).__name__ if error else "an unknown fault"
