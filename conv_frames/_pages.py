"""Pagination: follow ``meta.next_page_url`` from a first URL, with guards.

The walk trusts the server's links and page sizes and never builds a page URL
itself (Twilio wants its own ``PageToken``). It refuses any link that leaves
the listing's origin or path, carries credentials, or names a page already
seen, before a request is sent to it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urljoin, urlsplit

from ._errors import PaginationError, SchemaError
from ._transport import LoadStats, SentRequest, Transport, redact_url

__all__ = ["Page", "iter_pages"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: A page's path and its query parameters, sorted: two links to one page match.
PageIdentity = tuple[str, tuple[tuple[str, str], ...]]


class Page(list[dict[str, Any]]):
    """One page of records: a list, with where it came from.

    Attributes:
        number: 0-based position of the page in this walk.
        url: The URL requested for it (no credentials).
        page_size: ``meta.page_size``, the size the server actually used.
        next_page_url: ``meta.next_page_url``, or None on the last page.
        self_url: ``meta.url``, what the server says this page is, if it said.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        *,
        number: int,
        url: str,
        page_size: int | None,
        next_page_url: str | None,
        self_url: str | None = None,
    ) -> None:
        super().__init__(records)
        self.number = number
        self.url = url
        self.page_size = page_size
        self.next_page_url = next_page_url
        self.self_url = self_url

    def __repr__(self) -> str:
        return f"<Page {self.number}: {len(self)} records from {self.url}>"


def iter_pages(
    transport: Transport,
    first_url: str,
    *,
    key: str,
    stats: LoadStats,
    max_pages: int | None = None,
    ahead: bool = False,
) -> Generator[Page, None, None]:
    """Yield every page of a Twilio list resource, in the server's order.

    Args:
        transport: Sends each GET, with retries.
        first_url: The first page's URL; every next link must share its origin
            and path.
        key: The list's name, which ``meta.key`` must equal (``"users"``).
        stats: Counts pages, requests and retries.
        max_pages: Stop with a :class:`PaginationError` past this many pages.
        ahead: Put the next page's request on the wire before a page is
            yielded, so the server answers while the caller works on the page.
            Never more than that one request: a caller that stops (an error, or
            closing the iterator) drops its answer unread, and nothing past it
            is sent. The link is checked before anything is sent to it.

    Raises:
        PaginationError: A next link that must not be followed, or too many pages.
        SchemaError: A page whose envelope breaks the contract.
    """
    scope = _scope(first_url)
    seen: set[PageIdentity] = {_identity(first_url)}  # _next_url adds the others
    url: str | None = first_url
    number = 0
    sent: SentRequest | None = None  # the request for ``url``, when sent ahead
    try:
        while url is not None:
            _check_page_budget(number, max_pages, url)
            ahead_of_us, sent = sent, None  # get_json reads or drops it
            answer = transport.get_json(url, stats, sent=ahead_of_us)
            page = _read_page(answer, key=key, number=number, url=url)
            if page.self_url is not None:
                # What the server says it served counts too: an earlier page
                # handed back under a new link is caught when that page's link
                # comes again.
                seen.add(_identity(page.self_url))
            stats.pages += 1
            number += 1
            refused: PaginationError | None = None
            try:
                url = _next_url(page, scope, seen)
            except PaginationError as error:
                url, refused = None, error  # raised once the page is handed over
            if ahead and url is not None and _within_budget(number, max_pages):
                sent = transport.send(url, stats)
            yield page
            if refused is not None:
                raise refused
    finally:
        if sent is not None:  # the caller stopped: nobody reads this answer
            sent.discard()


def _within_budget(number: int, max_pages: int | None) -> bool:
    return max_pages is None or number < max_pages


def _check_page_budget(number: int, max_pages: int | None, url: str) -> None:
    if not _within_budget(number, max_pages):
        raise PaginationError(
            f"stopped after max_pages={max_pages} pages and the server still "
            f"links a next page ({redact_url(url)}); raise max_pages if the "
            "service is really that large"
        )


def _read_page(body: Any, *, key: str, number: int, url: str) -> Page:
    where = f"page {number} ({redact_url(url)})"
    if not isinstance(body, dict):
        raise SchemaError(
            f"{where} is a JSON {type(body).__name__}, not an object "
            "with 'meta' and a list"
        )
    meta = body.get("meta")
    if not isinstance(meta, dict):
        raise SchemaError(
            f"{where} has no 'meta' object, so its list and next page are unknown"
        )
    if meta.get("key") != key:
        raise SchemaError(
            f"{where} says meta.key is {meta.get('key')!r}, expected {key!r}"
        )
    records = body.get(key)
    if not isinstance(records, list):
        raise SchemaError(
            f"{where} has {type(records).__name__} under {key!r}, "
            "expected a list of items"
        )
    for index, item in enumerate(records):
        if not isinstance(item, dict):
            raise SchemaError(
                f"{where}: item {index} of {key!r} is a "
                f"{type(item).__name__}, not an object"
            )
    next_page_url = meta.get("next_page_url")
    if next_page_url is not None and not isinstance(next_page_url, str):
        raise SchemaError(
            f"{where}: meta.next_page_url is {next_page_url!r}, expected a URL or null"
        )
    page_size = meta.get("page_size")
    self_url = meta.get("url")
    return Page(
        records,
        number=number,
        url=redact_url(url),
        page_size=page_size if isinstance(page_size, int) else None,
        next_page_url=next_page_url,
        self_url=self_url if isinstance(self_url, str) else None,
    )


def _next_url(
    page: Page, scope: tuple[str, str, int, str], seen: set[PageIdentity]
) -> str | None:
    if page.next_page_url is None:
        return None
    try:
        url = urljoin(page.url, page.next_page_url)
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not one
    except ValueError as error:
        raise PaginationError(
            f"refused the next page link of page {page.number}, "
            f"{redact_url(page.next_page_url)}: it is not a valid URL ({error}); "
            "nothing was sent to it"
        ) from None
    identity = _identity_of(parts)
    problem = None
    if parts.username is not None or parts.password is not None:
        problem = "it carries credentials"
    elif _origin_of(parts) != scope[:3]:
        problem = f"it leaves the origin {scope[0]}://{scope[1]}:{scope[2]}"
    elif parts.path != scope[3]:
        problem = f"its path is not the listing's path {scope[3]}"
    elif identity in seen:
        problem = "it repeats a page already loaded, so following it would loop"
    if problem:
        raise PaginationError(
            f"refused the next page link of page {page.number}, "
            f"{redact_url(page.next_page_url)}: {problem}; nothing was sent to it"
        )
    seen.add(identity)
    return url


def _scope(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    return (*_origin_of(parts), parts.path)


def _origin_of(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, -1)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _identity(url: str) -> PageIdentity:
    """A page's identity: its path and its sorted query, whatever the order."""
    return _identity_of(urlsplit(url))


def _identity_of(parts: SplitResult) -> PageIdentity:
    return parts.path, tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
