"""The client and the loaders: pages in, a typed DataFrame (and Parquet) out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import requests

from ._config import (
    check_page_size,
    check_service_sid,
    resolve_base_url,
    resolve_credentials,
)
from ._errors import ConfigurationError
from ._frame import (
    InvalidAttributes,
    UserBatch,
    batches_to_frame,
    check_dtype_backend,
    count_duplicate_sids,
    normalize_records,
)
from ._pages import Page, iter_pages
from ._parquet import write_table
from ._schema import USERS_SCHEMA, DtypeBackend
from ._transport import LoadStats, RetryPolicy, Sleep, Timeout, Transport

__all__ = ["DEFAULT_TIMEOUT", "Client", "iter_user_pages", "load_users"]

logger = logging.getLogger("conv_frames")

#: Seconds to wait for a connection, and for each read of the answer.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 30.0)
_VERSION = "0.1.0"


class Client:
    """A connection to one account's Conversations API.

    It holds one pooled HTTP session and the retry policy; use it as a context
    manager, or call :meth:`close`. The module-level :func:`load_users` makes
    one for a single call.

    Args:
        account_sid: The account (``AC...``); else ``TWILIO_ACCOUNT_SID``.
        auth_token: The account's auth token; else ``TWILIO_AUTH_TOKEN``.
        api_key: An API key SID (``SK...``) to use instead of the auth token;
            else ``TWILIO_API_KEY``.
        api_secret: That key's secret; else ``TWILIO_API_SECRET``.
        base_url: The API root, such as the emulator's URL. By default
            ``https://conversations.twilio.com``, shaped by ``region``/``edge``.
        region: Twilio region (``ie1``...); else ``TWILIO_REGION``.
        edge: Twilio edge location (``dublin``...); else ``TWILIO_EDGE``.
        timeout: Seconds for connect and each read: one number or a pair.
        max_attempts: Requests per page before a transient fault is an error.
        max_retry_wait: Longest single wait between attempts, in seconds,
            ``Retry-After`` included.
        max_total_wait: Most seconds spent waiting on one page's retries.
        sleep: The function used to wait (tests pass a recorder).
        session: A ``requests.Session`` to use (proxies, adapters); the client
            sets its auth and headers.

    Raises:
        ConfigurationError: Missing or malformed credentials or settings.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        base_url: str | None = None,
        region: str | None = None,
        edge: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        max_retry_wait: float = 60.0,
        max_total_wait: float = 300.0,
        sleep: Sleep = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        self.credentials = resolve_credentials(
            account_sid=account_sid,
            auth_token=auth_token,
            api_key=api_key,
            api_secret=api_secret,
        )
        self.base_url = resolve_base_url(base_url, region=region, edge=edge)
        retry = _retry_policy(max_attempts, max_retry_wait, max_total_wait)
        self._transport = Transport(
            self.credentials,
            timeout=_check_timeout(timeout),
            retry=retry,
            sleep=sleep,
            session=session,
        )

    def __repr__(self) -> str:
        return (
            f"<Client account_sid={self.credentials.account_sid!r} "
            f"base_url={self.base_url!r}>"
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def iter_user_pages(
        self,
        service_sid: str,
        *,
        page_size: int = 50,
        max_pages: int | None = None,
        stats: LoadStats | None = None,
    ) -> Iterator[Page]:
        """Yield each page of a service's users as raw records, in API order.

        Args:
            service_sid: The Conversations service (``IS...``).
            page_size: Users asked per page (1..1000); the server may use fewer
                and the walk follows what it says.
            max_pages: Raise :class:`PaginationError` past this many pages.
            stats: Counters to fill in (requests, retries, pages).

        Yields:
            Page: a list of user dicts, with ``number``, ``url`` and ``page_size``.
        """
        first_url = self._users_url(service_sid, page_size)
        return self._walk(first_url, page_size, max_pages, stats or LoadStats())

    def load_users(
        self,
        service_sid: str,
        *,
        page_size: int = 50,
        max_pages: int | None = None,
        dtype_backend: DtypeBackend = "numpy_nullable",
        parquet_path: str | os.PathLike[str] | None = None,
        invalid_attributes: InvalidAttributes = "raise",
    ) -> pd.DataFrame:
        """Load every user of a service into a typed DataFrame.

        See :func:`conv_frames.load_users` for the arguments.
        """
        check_dtype_backend(dtype_backend)
        first_url = self._users_url(service_sid, page_size)
        started, clock = datetime.now(UTC), time.perf_counter()
        stats = LoadStats()
        batches = [
            normalize_records(page, invalid_attributes=invalid_attributes)
            for page in self._walk(first_url, page_size, max_pages, stats)
        ]
        frame = batches_to_frame(batches, dtype_backend=dtype_backend)
        provenance = self._provenance(service_sid, started, stats, batches, frame)
        frame.attrs.update(provenance)
        if parquet_path is not None:
            write_table(_concat(batches), parquet_path, provenance)
        logger.info(
            "loaded %d users of %s in %d pages (%d requests, %d retries, %.2f s)",
            len(frame),
            service_sid,
            stats.pages,
            stats.requests,
            stats.retries,
            time.perf_counter() - clock,
        )
        return frame

    def _users_url(self, service_sid: str, page_size: int) -> str:
        check_service_sid(service_sid)
        check_page_size(page_size)
        return f"{self.base_url}/v1/Services/{service_sid}/Users?PageSize={page_size}"

    def _walk(
        self, first_url: str, page_size: int, max_pages: int | None, stats: LoadStats
    ) -> Iterator[Page]:
        for page in iter_pages(
            self._transport, first_url, key="users", stats=stats, max_pages=max_pages
        ):
            if page.number == 0 and page.page_size not in (None, page_size):
                logger.info(
                    "the server uses pages of %s users (asked %d)",
                    page.page_size,
                    page_size,
                )
            yield page

    def _provenance(
        self,
        service_sid: str,
        started: datetime,
        stats: LoadStats,
        batches: list[UserBatch],
        frame: pd.DataFrame,
    ) -> dict[str, Any]:
        return {
            "service_sid": service_sid,
            "account_sid": self.credentials.account_sid,
            "api_host": urlsplit(self.base_url).netloc,
            "fetched_at": started.isoformat(),
            "rows": len(frame),
            "pages": stats.pages,
            "requests": stats.requests,
            "retries": stats.retries,
            "duplicate_sids": count_duplicate_sids(frame),
            "invalid_attributes": sum(b.invalid_attributes for b in batches),
            "conv_frames_version": _VERSION,
        }


def load_users(
    service_sid: str,
    *,
    account_sid: str | None = None,
    auth_token: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    base_url: str | None = None,
    region: str | None = None,
    edge: str | None = None,
    page_size: int = 50,
    timeout: Timeout = DEFAULT_TIMEOUT,
    max_attempts: int = 5,
    max_retry_wait: float = 60.0,
    max_total_wait: float = 300.0,
    max_pages: int | None = None,
    dtype_backend: DtypeBackend = "numpy_nullable",
    parquet_path: str | os.PathLike[str] | None = None,
    invalid_attributes: InvalidAttributes = "raise",
    sleep: Sleep = time.sleep,
    session: requests.Session | None = None,
) -> pd.DataFrame:
    """Load every user of a Conversations service into a typed DataFrame.

    Pages of ``GET /v1/Services/{service_sid}/Users`` are followed through
    ``meta.next_page_url`` until the last one; transient faults are retried.
    The load returns every user or raises: it never returns part of a service.

    Args:
        service_sid: The Conversations service (``IS`` and 32 hex digits).
        account_sid, auth_token, api_key, api_secret, base_url, region, edge,
            timeout, max_attempts, max_retry_wait, max_total_wait, sleep,
            session: See :class:`Client`.
        page_size: Users asked per page, 1..1000 (the API serves at most 50).
        max_pages: Raise :class:`PaginationError` past this many pages.
        dtype_backend: ``"numpy_nullable"`` or ``"pyarrow"`` column dtypes.
        parquet_path: Also write the users there, atomically; an earlier file
            stays untouched when the load fails.
        invalid_attributes: ``"raise"`` (default) or ``"null"`` for attributes
            text that is not JSON (counted in ``attrs["invalid_attributes"]``).

    Returns:
        One row per user the API listed, in API order, with provenance in
        ``DataFrame.attrs``.

    Raises:
        ConfigurationError: Bad arguments or missing credentials; nothing was sent.
        APIError: The API answered with an error (after retries if transient).
        TransportError: The network failed, after retries.
        PaginationError: A next-page link was refused.
        SchemaError: A page or a record broke the API's contract.
        ExportError: The Parquet file could not be written.

    Example:
        >>> frame = load_users("IS...")  # credentials from TWILIO_*  # doctest: +SKIP
    """
    with Client(
        account_sid=account_sid,
        auth_token=auth_token,
        api_key=api_key,
        api_secret=api_secret,
        base_url=base_url,
        region=region,
        edge=edge,
        timeout=timeout,
        max_attempts=max_attempts,
        max_retry_wait=max_retry_wait,
        max_total_wait=max_total_wait,
        sleep=sleep,
        session=session,
    ) as client:
        return client.load_users(
            service_sid,
            page_size=page_size,
            max_pages=max_pages,
            dtype_backend=dtype_backend,
            parquet_path=parquet_path,
            invalid_attributes=invalid_attributes,
        )


def iter_user_pages(
    service_sid: str,
    *,
    page_size: int = 50,
    max_pages: int | None = None,
    **client_options: Any,
) -> Iterator[Page]:
    """Yield each page of a service's users as raw records, in API order.

    Takes the options of :class:`Client`; the client is closed when the
    iteration ends or the generator is closed.

    Yields:
        Page: a list of user dicts with ``number``, ``url`` and ``page_size``.
    """
    with Client(**client_options) as client:
        yield from client.iter_user_pages(
            service_sid, page_size=page_size, max_pages=max_pages
        )


def _concat(batches: list[UserBatch]) -> pa.Table:
    tables = [batch.table for batch in batches] or [USERS_SCHEMA.empty_table()]
    return pa.concat_tables(tables, promote_options="permissive")


def _retry_policy(
    max_attempts: int, max_retry_wait: float, max_total_wait: float
) -> RetryPolicy:
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or max_attempts < 1
    ):
        raise ConfigurationError(
            f"max_attempts={max_attempts!r} must be an integer >= 1"
        )
    for name, value in (
        ("max_retry_wait", max_retry_wait),
        ("max_total_wait", max_total_wait),
    ):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigurationError(
                f"{name}={value!r} must be a number of seconds >= 0"
            )
    return RetryPolicy(
        max_attempts=max_attempts,
        max_retry_wait=float(max_retry_wait),
        max_total_wait=float(max_total_wait),
    )


def _check_timeout(timeout: Timeout) -> Timeout:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if (
        not values
        or len(values) > 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            for v in values
        )
    ):
        raise ConfigurationError(
            f"timeout={timeout!r} must be seconds > 0, or a (connect, read) pair"
        )
    return timeout
