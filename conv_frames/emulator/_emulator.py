"""The :class:`Emulator`: a seeded Conversations v1 API on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ._api import Api
from ._data import (
    collector_paused,
    derive_credentials,
    derive_sid,
    make_services,
    make_users,
)
from ._faults import FaultPlan
from ._server import EmulatorHTTPServer, LoggedRequest, Runtime

__all__ = ["Emulator"]

logger = logging.getLogger("conv_frames.emulator")

#: How often the serving loop checks for a stop request, in seconds.
_POLL_INTERVAL = 0.05
#: How long :meth:`Emulator.stop` waits for the serving thread to end.
_JOIN_TIMEOUT = 5.0


class Emulator:
    """A local Twilio Conversations v1 API serving seeded users.

    The server binds when started, on ``host`` and a free port unless one is
    given, and answers in threads; ``stop`` returns promptly even while a
    request is stalled by a fault or latency. Records carry absolute URLs
    under :attr:`base_url`, so they are built when the server starts.

    Args:
        users: Users per service; an int means a single service.
        seed: Seeds the account, its credentials, services and users.
        page_size_cap: The largest page of users the server sends.
        faults: Which requests to answer with a fault, if any.
        latency: Seconds added before each answer.
        rate_limit: Requests per second the account may send; excess
            requests are answered 429 with ``Retry-After``.
        max_concurrency: Requests the account may have in flight; excess
            requests are answered 429.
        reachability: The services' ``reachability_enabled``: whether a
            single-user fetch reports ``is_online`` and ``is_notifiable``.
        host: Address to bind; keep the loopback default.
        port: Port to bind; 0 picks a free one.

    Raises:
        ValueError: A count, cap, latency or limit is out of range.

    Example:
        >>> import requests
        >>> with Emulator(users=3) as emu:
        ...     page = requests.get(
        ...         f"{emu.base_url}/v1/Services/{emu.service_sid}/Users",
        ...         auth=(emu.account_sid, emu.auth_token),
        ...         timeout=5,
        ...     ).json()
        >>> len(page["users"])
        3
    """

    def __init__(
        self,
        *,
        users: int | Sequence[int] = 1234,
        seed: int = 0,
        page_size_cap: int = 50,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        rate_limit: float | None = None,
        max_concurrency: int | None = None,
        reachability: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._counts = (users,) if isinstance(users, int) else tuple(users)
        _check_settings(
            self._counts, page_size_cap, latency, rate_limit, max_concurrency
        )
        self._seed = seed
        self._page_size_cap = page_size_cap
        self._faults = faults
        self._latency = latency
        self._rate_limit = rate_limit
        self._max_concurrency = max_concurrency
        self._reachability = reachability
        self._address = (host, port)
        self._credentials = derive_credentials(seed)
        self._service_sids = [
            derive_sid("IS", seed, f"service:{index}")
            for index in range(len(self._counts))
        ]
        self._users: dict[str, list[dict[str, Any]]] = {}
        self._server: EmulatorHTTPServer | None = None
        self._runtime: Runtime | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = self.base_url if self._server is not None else "not started"
        return (
            f"Emulator({state}, account_sid={self.account_sid!r}, "
            f"services={len(self._counts)}, users={sum(self._counts)})"
        )

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``"http://HOST:PORT"``, without a trailing slash."""
        host, port = self._bound().server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def account_sid(self) -> str:
        """The account SID, ``"AC"`` and 32 hex digits."""
        return self._credentials.account_sid

    @property
    def auth_token(self) -> str:
        """The auth token accepted with :attr:`account_sid`."""
        return self._credentials.auth_token

    @property
    def api_key(self) -> str:
        """An API key SID, ``"SK"`` and 32 hex digits."""
        return self._credentials.api_key

    @property
    def api_secret(self) -> str:
        """The secret accepted with :attr:`api_key`."""
        return self._credentials.api_secret

    @property
    def service_sid(self) -> str:
        """The first service, which is also the account's default service."""
        return self._service_sids[0]

    @property
    def service_sids(self) -> list[str]:
        """Every service SID, in the order of the ``users`` counts."""
        return list(self._service_sids)

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of the request log, oldest first."""
        return self._running().journal.entries() if self._runtime else []

    @property
    def fault_counts(self) -> dict[str, int]:
        """How many faults of each kind were injected so far."""
        return self._running().journal.fault_counts() if self._runtime else {}

    def users(self, service_sid: str | None = None) -> list[dict[str, Any]]:
        """Return a service's users exactly as its list endpoint serves them.

        These are the records of ``/v1/Services/{sid}/Users``, in paging
        order. ``/v1/Users`` serves the first service's users with URLs
        under ``/v1/Users`` instead, as Twilio does.

        Args:
            service_sid: The service; the first one when omitted.

        Raises:
            RuntimeError: The emulator has not been started.
            ValueError: No service has this SID.
        """
        self._bound()
        sid = self.service_sid if service_sid is None else service_sid
        if sid not in self._users:
            raise ValueError(
                f"unknown service {sid!r}; services are {self._service_sids}"
            )
        with collector_paused():
            return [
                {**record, "links": dict(record["links"])}
                for record in self._users[sid]
            ]

    def start(self) -> None:
        """Bind, build the dataset and serve in a background thread.

        Raises:
            RuntimeError: The emulator was started before.
            OSError: The address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("an Emulator can be started once")
        server = EmulatorHTTPServer(self._address)
        self._server = server
        try:
            self._runtime = server.runtime = self._build_runtime(self.base_url)
        except BaseException:
            server.server_close()
            raise
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"conv-frames-emulator-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("emulator serving on %s", self.base_url)

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        server, runtime, thread = self._server, self._runtime, self._thread
        if server is None or runtime is None or thread is None:
            return
        if runtime.stopping.is_set():
            return
        runtime.stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_all()
        thread.join(_JOIN_TIMEOUT)
        logger.debug("emulator on %s stopped", self.base_url)

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C) or stopped from another thread."""
        if self._server is None:
            self.start()
        stopping = self._running().stopping
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            logger.debug("interrupted")
        finally:
            self.stop()

    def _build_runtime(self, base_url: str) -> Runtime:
        services = make_services(
            len(self._counts),
            seed=self._seed,
            account_sid=self.account_sid,
            base_url=base_url,
        )
        for sid, count in zip(self._service_sids, self._counts, strict=True):
            self._users[sid] = make_users(
                count,
                seed=self._seed,
                account_sid=self.account_sid,
                service_sid=sid,
                base_url=base_url,
            )
        api = Api(
            credentials=self._credentials,
            services=services,
            users=self._users,
            base_url=base_url,
            page_size_cap=self._page_size_cap,
            reachability=self._reachability,
            secret=hashlib.blake2b(f"page-token:{self._seed}".encode()).digest()[:32],
        )
        return Runtime(
            api,
            faults=self._faults,
            latency=self._latency,
            rate_limit=self._rate_limit,
            max_concurrency=self._max_concurrency,
        )

    def _bound(self) -> EmulatorHTTPServer:
        if self._server is None:
            raise RuntimeError(
                "the emulator is not started; call start() or use `with`"
            )
        return self._server

    def _running(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the emulator is not started")
        return self._runtime


def _check_settings(
    counts: Sequence[int],
    page_size_cap: int,
    latency: float,
    rate_limit: float | None,
    max_concurrency: int | None,
) -> None:
    if not counts or any(count < 0 for count in counts):
        raise ValueError(
            f"users needs one count of 0 or more per service, got {counts}"
        )
    if page_size_cap < 1:
        raise ValueError(f"page_size_cap must be 1 or more, got {page_size_cap}")
    if not (math.isfinite(latency) and latency >= 0):
        raise ValueError(f"latency must be zero or more seconds, got {latency}")
    if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit > 0):
        raise ValueError(
            f"rate_limit must be a positive number of requests a second, "
            f"got {rate_limit}"
        )
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ValueError(
            f"max_concurrency must be a whole number of requests, 1 or more, "
            f"got {max_concurrency}"
        )
