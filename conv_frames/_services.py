"""Several services loaded at once, in a bounded pool of workers (#4).

Listing one service is sequential: each page brings the link to the next, so
a load keeps one request in flight. Loading several services (of one account,
or of several through one call each) is how to keep more requests in flight;
``max_workers`` bounds how many, since all of an account's requests count
against its rate limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd

from ._client import Client, open_client
from ._config import check_count, check_page_size, check_service_sid
from ._errors import ServicesLoadError
from ._frame import InvalidAttributes, check_dtype_backend, check_invalid_attributes
from ._presence import AdaptiveLimit
from ._schema import DtypeBackend

__all__ = ["check_max_workers", "load_services", "shared_limit"]

logger = logging.getLogger(__name__)


def load_services(
    service_sids: Iterable[str],
    *,
    max_workers: int = 4,
    page_size: int = 50,
    max_pages: int | None = None,
    dtype_backend: DtypeBackend = "numpy_nullable",
    invalid_attributes: InvalidAttributes = "raise",
    **client_options: Any,
) -> dict[str, pd.DataFrame]:
    """Load the users of several services at once, ``max_workers`` at most.

    Each worker thread has a :class:`Client` of its own (its own pooled
    connection) and loads one service at a time, exactly as
    :func:`load_users` does. Every service is loaded to the end whatever
    happens to the others, so one failure loses nothing that did load.
    The workers' requests share one adaptive limit: a 429 (the account's
    concurrency limit) shrinks how many are sent at once, so the services
    load more slowly rather than fail (see :func:`shared_limit`).

    Args:
        service_sids: The services (``IS...``); one given twice loads once.
        max_workers: Services loaded at once, each with one request in flight
            at most; fewer while the account answers 429.
        page_size, max_pages, dtype_backend, invalid_attributes: See
            :func:`load_users`.
        **client_options: Options of :class:`Client` (credentials,
            ``base_url``, retries...). A ``session`` given is shared by all
            the workers.

    Returns:
        Each service's frame, by SID, in the order given.

    Raises:
        ConfigurationError: Bad arguments or credentials; nothing was sent.
        ServicesLoadError: One or more services failed; its ``frames`` holds
            the services that loaded and its ``errors`` what each failure was.

    Example:
        >>> frames = load_services(["IS...", "IS..."])  # doctest: +SKIP
    """
    sids = list(dict.fromkeys(check_service_sid(sid) for sid in service_sids))
    check_max_workers(max_workers)
    check_page_size(page_size)
    check_dtype_backend(dtype_backend)
    check_invalid_attributes(invalid_attributes)
    # Options, credentials and base_url, before any request.
    open_client(load_services, client_options).close()

    clients = _WorkerClients(shared_limit(client_options, max_workers))

    def load(sid: str) -> pd.DataFrame:
        return clients.get().load_users(
            sid,
            page_size=page_size,
            max_pages=max_pages,
            dtype_backend=dtype_backend,
            invalid_attributes=invalid_attributes,
            progress=False,  # one bar per service would garble a terminal
        )

    workers = max(1, min(max_workers, len(sids)))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="conv-frames") as pool:
            futures = {sid: pool.submit(load, sid) for sid in sids}
            frames, errors = _outcomes(futures)
    finally:
        clients.close()

    if errors:
        raise ServicesLoadError(frames, errors)
    return frames


class _WorkerClients:
    """One :class:`Client` per worker thread, made on its first service."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._local = threading.local()
        self._made: list[Client] = []
        self._lock = threading.Lock()

    def get(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = Client(**self._options)
            with self._lock:
                self._made.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._made:
                client.close()


def _outcomes(
    futures: dict[str, Future[pd.DataFrame]],
) -> tuple[dict[str, pd.DataFrame], dict[str, Exception]]:
    """Wait for every load; sort frames from errors, keeping the given order."""
    frames: dict[str, pd.DataFrame] = {}
    errors: dict[str, Exception] = {}
    try:
        for sid, future in futures.items():
            error = future.exception()
            if error is None:
                frames[sid] = future.result()
            elif isinstance(error, Exception):
                errors[sid] = error
                logger.warning("loading %s failed: %s", sid, error)
            else:
                raise error
    except BaseException:
        for future in futures.values():  # an interrupt: start nothing new
            future.cancel()
        raise
    return frames, errors


def shared_limit(client_options: Mapping[str, Any], workers: int) -> dict[str, Any]:
    """Client options whose clients share one limit on requests in flight.

    The services of one account count against its concurrency limit
    together: a fixed number of workers would keep sending into 429s until
    their retries ran out. An :class:`AdaptiveLimit` (the presence pool's)
    starts at ``workers`` and shrinks at each 429, once per round trip, so
    that the loads queue behind each other instead (#6).
    """
    limit = AdaptiveLimit(workers, initial=workers)
    return {**client_options, "request_limit": limit}


def check_max_workers(max_workers: object, name: str = "max_workers") -> None:
    """Refuse a number of services at once that is not a whole number >= 1."""
    check_count(
        max_workers,
        name,
        " (services loaded at once; each keeps one request in flight)",
    )
