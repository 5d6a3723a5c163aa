"""The client and the loaders: pages in, a typed DataFrame (and Parquet) out."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import requests

from ._config import (
    check_count,
    check_page_size,
    check_seconds,
    check_service_sid,
    named,
    resolve_base_url,
    resolve_credentials,
)
from ._errors import ConfigurationError, SchemaError
from ._frame import (
    BatchCollector,
    InvalidAttributes,
    UserBatch,
    batches_to_frame,
    check_dtype_backend,
    check_invalid_attributes,
    concat_batches,
    count_duplicate_sids,
    normalize_records,
)
from ._pages import Page, iter_pages
from ._parquet import ParquetSink, write_table
from ._presence import (
    DEFAULT_MAX_CONCURRENCY,
    PresenceErrors,
    PresenceFetcher,
    check_load_presence,
    with_presence,
)
from ._progress import Progress, ProgressReporter, check_progress
from ._schema import DtypeBackend
from ._transport import (
    LoadStats,
    RequestLimit,
    RetryPolicy,
    Sleep,
    Timeout,
    Transport,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Client",
    "check_max_pages",
    "check_timeout",
    "export_users",
    "iter_user_pages",
    "load_users",
    "open_client",
]

logger = logging.getLogger("conv_frames")

#: Seconds to wait for a connection, and for each read of the answer.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 30.0)
_VERSION = "0.1.0"
#: A timeout this long is a mistake, and sockets refuse infinite ones.
_MAX_TIMEOUT = 86_400.0
#: Pages of SIDs a tally merges into one array (#4).
_SID_CHUNKS_PER_BLOCK = 128
#: Pages between returns of Arrow's unused memory to the system (#4).
_RELEASE_EVERY_PAGES = 64


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
        session: A ``requests.Session`` to use (proxies, adapters). It is lent,
            not given: auth and headers travel with each request, the session
            itself is left unchanged, and the caller closes it.
        request_limit: Slots for requests in flight shared with other
            clients of the account (an ``AdaptiveLimit``), so that their
            loads together slow down on a 429 rather than fail; see
            :func:`load_services`.

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
        request_limit: RequestLimit | None = None,
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
            timeout=check_timeout(timeout),
            retry=retry,
            sleep=sleep,
            session=session,
            limit=request_limit,
        )
        self._sleep = sleep  # the presence pool builds its own gated transport
        self._session = session

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
        service_sid: str | None,
        *,
        page_size: int = 50,
        max_pages: int | None = None,
        stats: LoadStats | None = None,
    ) -> Iterator[Page]:
        """Yield each page of a service's users as raw records, in API order.

        Args:
            service_sid: The Conversations service (``IS...``), or None for
                the account's default service (``GET /v1/Users``).
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
        service_sid: str | None,
        *,
        page_size: int = 50,
        max_pages: int | None = None,
        dtype_backend: DtypeBackend = "numpy_nullable",
        parquet_path: str | os.PathLike[str] | None = None,
        invalid_attributes: InvalidAttributes = "raise",
        presence: bool = False,
        presence_errors: PresenceErrors = "raise",
        presence_max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        presence_initial_concurrency: int | None = None,
        progress: Progress = None,
    ) -> pd.DataFrame:
        """Load every user of a service into a typed DataFrame.

        See :func:`conv_frames.load_users` for the arguments.
        """
        check_dtype_backend(dtype_backend)
        check_load_presence(
            presence,
            max_concurrency=presence_max_concurrency,
            initial_concurrency=presence_initial_concurrency,
            errors=presence_errors,
        )
        collected = BatchCollector()
        attrs = self._run(
            service_sid,
            page_size,
            max_pages,
            invalid_attributes,
            None if presence else parquet_path,  # written once presence is in
            keep=collected.append,
            progress=progress,
        )
        batches = collected.batches()
        del collected
        frame = batches_to_frame(batches, dtype_backend=dtype_backend)
        frame.attrs.update(attrs)
        if presence:
            frame = self.fill_presence(
                frame,
                max_concurrency=presence_max_concurrency,
                initial_concurrency=presence_initial_concurrency,
                errors=presence_errors,
                progress=progress,
            )
            if parquet_path is not None:
                table = with_presence(concat_batches(batches), frame)
                provenance = {str(key): value for key, value in frame.attrs.items()}
                write_table(table, parquet_path, provenance)
        # What the pages and the conversion freed stays in Arrow's pool for
        # reuse unless handed back: about 60 MB at 100,000 users (#4).
        del batches
        pa.default_memory_pool().release_unused()
        return frame

    def fill_presence(
        self,
        frame: pd.DataFrame,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        initial_concurrency: int | None = None,
        errors: PresenceErrors = "raise",
        progress: Progress = None,
        only_unfilled: bool = False,
    ) -> pd.DataFrame:
        """Fetch each user of ``frame`` for ``is_online`` and ``is_notifiable``.

        See :func:`conv_frames.fill_presence` for the arguments.
        """
        fetcher = PresenceFetcher(
            self.credentials,
            self.base_url,
            timeout=self._transport.timeout,
            retry=self._transport.retry,
            sleep=self._sleep,
            session=self._session,
            max_concurrency=max_concurrency,
            initial_concurrency=initial_concurrency,
        )
        return fetcher.fill(
            frame, errors=errors, progress=progress, only_unfilled=only_unfilled
        )

    def export_users(
        self,
        service_sid: str | None,
        parquet_path: str | os.PathLike[str],
        *,
        page_size: int = 50,
        max_pages: int | None = None,
        invalid_attributes: InvalidAttributes = "raise",
        progress: Progress = None,
        row_group_rows: int | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Stream every user of a service to Parquet, a page at a time.

        Memory stays at a few pages whatever the service's size; the file is
        the same as ``load_users(..., parquet_path=...)`` writes.

        Args:
            row_group_rows: Users per Parquet row group (pages are gathered
                until that many have come); by default ``ROW_GROUP_ROWS``.
            cancel: An event another thread sets to abandon the export: no
                request is sent after it, and nothing is published. A
                ``CancelEvent`` (what the snapshot run passes) also ends the
                request on the wire at once; a plain ``threading.Event`` lets
                it end within the read timeout.

        Returns:
            The provenance written to the file (rows, pages, retries...).
        """
        return self._run(
            service_sid,
            page_size,
            max_pages,
            invalid_attributes,
            parquet_path,
            progress=progress,
            row_group_rows=row_group_rows,
            cancel=cancel,
        )

    def _run(
        self,
        service_sid: str | None,
        page_size: int,
        max_pages: int | None,
        invalid_attributes: InvalidAttributes,
        parquet_path: str | os.PathLike[str] | None,
        keep: Callable[[UserBatch], None] | None = None,
        progress: Progress = None,
        row_group_rows: int | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Walk, type and optionally write every page; return the provenance."""
        check_invalid_attributes(invalid_attributes)
        check_progress(progress)
        first_url = self._users_url(service_sid, page_size)
        tally = _Tally(service_sid, datetime.now(UTC))
        tally.stats.run_cancelled = cancel
        pages = self._walk(first_url, page_size, max_pages, tally.stats, ahead=True)
        with ExitStack() as stack:
            # Abandoning the load, or its run, ends a request the server stalls.
            stack.enter_context(self._transport.aborting(tally.stats))
            report = stack.enter_context(ProgressReporter(progress, task="users"))
            sink = None
            if parquet_path is not None:
                sink = stack.enter_context(
                    ParquetSink(parquet_path, row_group_rows=row_group_rows)
                )
            # The next page is on the wire while this one is typed and written.
            pages = stack.enter_context(closing(pages))
            for page in pages:
                batch = normalize_records(page, invalid_attributes=invalid_attributes)
                tally.add(batch)
                if sink is not None:
                    sink.write(batch.table)
                if keep is not None:
                    keep(batch)
                report.update(tally.rows, **tally.counts())
                if tally.pages % _RELEASE_EVERY_PAGES == 0:
                    # Arrow's pool keeps what pages and row groups freed for
                    # reuse; handing it back keeps a long load's RSS flat (#4).
                    pa.default_memory_pool().release_unused()
            attrs = tally.provenance(self.credentials.account_sid, self.base_url)
            if sink is not None:
                sink.publish(attrs)
            report.finish(tally.rows, **tally.counts())
        logger.info(
            "loaded %d users of %s in %d pages (%d requests, %d retries, %.2f s)",
            attrs["rows"],
            attrs["service_sid"],
            attrs["pages"],
            attrs["requests"],
            attrs["retries"],
            time.perf_counter() - tally.clock,
        )
        return attrs

    def list_services(self, *, max_pages: int | None = None) -> list[dict[str, Any]]:
        """Return every Conversations service of the account (``GET /v1/Services``).

        Returns:
            The service records as the API sends them, in API order.
        """
        url = f"{self.base_url}/v1/Services?PageSize=100"
        pages = iter_pages(
            self._transport, url, key="services", stats=LoadStats(), max_pages=max_pages
        )
        return [record for page in pages for record in page]

    def default_service_sid(self) -> str:
        """Ask ``GET /v1/Configuration`` for the account's default service SID.

        That is the service whose users ``GET /v1/Users`` lists; the answer
        does not depend on the service having users.

        Raises:
            ConfigurationError: The account has no default service.
            SchemaError: The answer names no service SID.
        """
        body = self._transport.get_json(
            f"{self.base_url}/v1/Configuration", LoadStats()
        )
        if not isinstance(body, dict) or "default_chat_service_sid" not in body:
            raise SchemaError(
                "GET /v1/Configuration answered without a default_chat_service_sid"
            )
        sid = body["default_chat_service_sid"]
        if sid is None:
            raise ConfigurationError(
                "the account has no default Conversations service (GET "
                "/v1/Configuration: default_chat_service_sid is null); export "
                "services by their SID (--service)"
            )
        try:
            return check_service_sid(sid)
        except ConfigurationError:
            raise SchemaError(
                f"GET /v1/Configuration gave a default_chat_service_sid of {sid!r}, "
                "which is not a service SID"
            ) from None

    def _users_url(self, service_sid: str | None, page_size: int) -> str:
        if service_sid is not None:
            check_service_sid(service_sid)
        check_page_size(page_size)
        path = f"/v1/Services/{service_sid}/Users"
        if service_sid is None:  # the account's default service
            path = "/v1/Users"
        return f"{self.base_url}{path}?PageSize={page_size}"

    def _walk(
        self,
        first_url: str,
        page_size: int,
        max_pages: int | None,
        stats: LoadStats,
        *,
        ahead: bool = False,
    ) -> Generator[Page, None, None]:
        check_max_pages(max_pages)
        return self._pages(first_url, page_size, max_pages, stats, ahead)

    def _pages(
        self,
        first_url: str,
        page_size: int,
        max_pages: int | None,
        stats: LoadStats,
        ahead: bool,
    ) -> Generator[Page, None, None]:
        pages = iter_pages(
            self._transport,
            first_url,
            key="users",
            stats=stats,
            max_pages=max_pages,
            ahead=ahead,
        )
        with closing(pages):
            for page in pages:
                if page.number == 0 and page.page_size not in (None, page_size):
                    logger.info(
                        "the server uses pages of %s users (asked %d)",
                        page.page_size,
                        page_size,
                    )
                yield page


class _Tally:
    """What a load counts as it goes, without keeping the pages."""

    def __init__(self, service_sid: str | None, started: datetime) -> None:
        self.service_sid = service_sid
        self.started = started
        self.clock = time.perf_counter()
        self.stats = LoadStats()
        self.rows = 0
        self.pages = 0  # pages typed and written
        self.invalid_attributes = 0
        # ~38 bytes a user, for duplicate counts: the last pages' SIDs, and
        # blocks of earlier ones merged so that few small buffers are kept.
        self._sids: list[pa.Array] = []
        self._recent_sids: list[pa.Array] = []

    def counts(self) -> dict[str, int]:
        """The counters a progress report shows."""
        stats = self.stats
        return {
            "pages": self.pages,
            "requests": stats.requests,
            "retries": stats.retries,
        }

    def add(self, batch: UserBatch) -> None:
        if self.service_sid is None and batch.num_rows:
            # /v1/Users (the default service) names its service in each user.
            self.service_sid = batch.table.column("chat_service_sid")[0].as_py()
        self.rows += batch.num_rows
        self.pages += 1
        self.invalid_attributes += batch.invalid_attributes
        self._recent_sids.extend(batch.table.column("sid").chunks)
        if len(self._recent_sids) >= _SID_CHUNKS_PER_BLOCK:
            self._sids.append(pa.concat_arrays(self._recent_sids))
            self._recent_sids = []

    def provenance(self, account_sid: str, base_url: str) -> dict[str, Any]:
        sids = pa.chunked_array(self._sids + self._recent_sids, type=pa.string())
        return {
            "service_sid": self.service_sid,
            "account_sid": account_sid,
            "api_host": urlsplit(base_url).netloc,
            "fetched_at": self.started.isoformat(),
            "rows": self.rows,
            "pages": self.stats.pages,
            "requests": self.stats.requests,
            "retries": self.stats.retries,
            "duplicate_sids": count_duplicate_sids(sids),
            "invalid_attributes": self.invalid_attributes,
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
    presence: bool = False,
    presence_errors: PresenceErrors = "raise",
    presence_max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    presence_initial_concurrency: int | None = None,
    progress: Progress = None,
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
        presence: Also fetch each user for ``is_online`` and ``is_notifiable``,
            which the list leaves null (see :func:`fill_presence`); the
            Parquet file then holds them too.
        presence_errors: ``"raise"`` (default) or ``"null"`` for users whose
            presence cannot be fetched (see :func:`fill_presence`).
        presence_max_concurrency, presence_initial_concurrency: The presence
            pool's ``max_concurrency`` and ``initial_concurrency`` (see
            :func:`fill_presence`). The ``presence_*`` options are refused
            without ``presence=True``.
        progress: None shows a progress bar where someone watches (a terminal,
            a notebook), True or False forces it, a callable gets
            :class:`ProgressEvent` objects instead.

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
            presence=presence,
            presence_errors=presence_errors,
            presence_max_concurrency=presence_max_concurrency,
            presence_initial_concurrency=presence_initial_concurrency,
            progress=progress,
        )


def export_users(
    service_sid: str,
    parquet_path: str | os.PathLike[str],
    *,
    page_size: int = 50,
    max_pages: int | None = None,
    invalid_attributes: InvalidAttributes = "raise",
    progress: Progress = None,
    **client_options: Any,
) -> dict[str, Any]:
    """Stream every user of a service to a Parquet file, a page at a time.

    The file equals what ``load_users(..., parquet_path=...)`` writes, but no
    DataFrame is built, so memory stays at a few pages whatever the size of
    the service. Takes the options of :class:`Client`, and ``progress`` as
    :func:`load_users` does.

    Returns:
        The provenance stored in the file: rows, pages, requests, retries...
    """
    with open_client(export_users, client_options) as client:
        return client.export_users(
            service_sid,
            parquet_path,
            page_size=page_size,
            max_pages=max_pages,
            invalid_attributes=invalid_attributes,
            progress=progress,
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
    with open_client(iter_user_pages, client_options) as client:
        yield from client.iter_user_pages(
            service_sid, page_size=page_size, max_pages=max_pages
        )


#: The way out for options people pass where they do not apply.
_OPTION_ADVICE = {
    "presence": "to fetch presence, use load_users(..., presence=True) or "
    "fill_presence(frame)",
}


def open_client(caller: Callable[..., Any], options: Mapping[str, Any]) -> Client:
    """Make the :class:`Client` of a function that takes ``**client_options``.

    An option that neither the function nor the client takes is refused here,
    by name, with the function and what to use instead, rather than as
    ``TypeError: Client.__init__() got an unexpected keyword argument``.

    Raises:
        ConfigurationError: An unknown option, or what :class:`Client` refuses.
    """
    accepted = set(inspect.signature(Client).parameters)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ConfigurationError(_unknown_option(caller, unknown[0], accepted))
    return Client(**options)


def _unknown_option(caller: Callable[..., Any], name: str, client: set[str]) -> str:
    own = [
        parameter.name
        for parameter in inspect.signature(caller).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    advice = _OPTION_ADVICE.get(name.split("_")[0])
    if advice is None:
        close = difflib.get_close_matches(name, [*own, *sorted(client)], n=1)
        advice = f"did you mean {close[0]}?" if close else None
    if advice is None:
        advice = f"it takes {', '.join(own)} and the options of Client"
    return f"{caller.__name__}() has no option {name!r}; {advice}"


def _retry_policy(
    max_attempts: int, max_retry_wait: float, max_total_wait: float
) -> RetryPolicy:
    check_count(max_attempts, "max_attempts")
    check_seconds(max_retry_wait, "max_retry_wait")
    check_seconds(max_total_wait, "max_total_wait")
    return RetryPolicy(
        max_attempts=max_attempts,
        max_retry_wait=float(max_retry_wait),
        max_total_wait=float(max_total_wait),
    )


def check_max_pages(max_pages: object, name: str = "max_pages") -> None:
    """Refuse a page limit that is not a whole number >= 1 (None: no limit)."""
    if max_pages is not None:
        check_count(max_pages, name, " (pages), or None for no limit")


def check_timeout(timeout: Timeout, name: str = "timeout") -> Timeout:
    """Refuse a timeout that is not seconds, or a (connect, read) pair of them."""
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if len(values) != (2 if isinstance(timeout, tuple) else 1) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < _MAX_TIMEOUT
        for v in values
    ):
        raise ConfigurationError(
            f"{named(name, timeout)} must be seconds (more than 0, less than a day), "
            "or a (connect, read) pair of them"
        )
    return timeout
