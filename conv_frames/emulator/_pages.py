"""Paging of list resources: page tokens, page URLs and the page cache.

A list answer is ``{"meta": {...}, "<key>": [...]}``. The first page needs no
token; every link to another page carries ``PageSize``, ``Page`` and an
opaque ``PageToken`` that encodes where the page starts and is signed, so a
token the emulator did not issue is refused. Rendered pages are cached by
resource, page size, page index and start, so serving a page again costs a
dict lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ._replies import Body, Reply, twilio_error

__all__ = ["MAX_PAGE_SIZE", "Listing", "Pager"]

#: The largest ``PageSize`` a request may ask for (the server may use less).
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

#: Twilio's code for an invalid or missing request parameter.
INVALID_PARAMETER = 20001

_NEXT, _PREVIOUS = "PA", "PB"
_OFFSET_BYTES = 5
_MAC_BYTES = 7
_TOKEN_LENGTH = 2 + 4 * (_OFFSET_BYTES + _MAC_BYTES) // 3

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Listing:
    """One list resource: the records behind a list URL.

    Attributes:
        path: The resource path, such as ``"/v1/Services/IS.../Users"``.
        key: The list field of the page, also sent as ``meta.key``.
        records: Every record, in paging order.
        cap: The largest page size the server uses for this resource.
        view: Turns a stored record into the one this path serves, if the
            two differ (``/v1/Users`` serves URLs under ``/v1/Users``).
    """

    path: str
    key: str
    records: Sequence[Record]
    cap: int
    view: Callable[[Record], Record] | None = None


class Pager:
    """Answers list requests, with signed page tokens and cached pages.

    Args:
        base_url: Absolute origin the page links are built on.
        secret: Key that signs page tokens.
    """

    def __init__(self, base_url: str, secret: bytes) -> None:
        self._base_url = base_url
        self._secret = secret
        self._cache: dict[tuple[str, int, int, int], Body] = {}

    def answer(self, listing: Listing, query: Mapping[str, str]) -> Reply:
        """Return the page a list request asks for, or a 400 Twilio error."""
        size = _page_size(query.get("PageSize"), listing.cap)
        page = _page_index(query.get("Page"))
        if size is None:
            return _invalid(f"PageSize must be an integer from 1 to {MAX_PAGE_SIZE}")
        if page is None:
            return _invalid("Page must be an integer of 0 or more")

        token = query.get("PageToken")
        offset = 0 if token is None else self._offset(listing, token)
        if (token is None or offset is None) and page > 0:
            return _invalid("PageToken is required for paging.")
        if offset is None:
            return _invalid("PageToken is not one this resource issued.")

        key = (listing.path, size, page, offset)
        body = self._cache.get(key)
        if body is None:
            body = self._cache.setdefault(
                key, self._render(listing, size, page, offset)
            )
        return Reply(200, body, compressible=True)

    def _render(self, listing: Listing, size: int, page: int, offset: int) -> Body:
        chunk = listing.records[offset : offset + size]
        if listing.view is not None:
            chunk = [listing.view(record) for record in chunk]
        meta = self._meta(listing, size, page, offset)
        return Body(orjson.dumps({"meta": meta, listing.key: chunk}))

    def _meta(
        self, listing: Listing, size: int, page: int, offset: int
    ) -> dict[str, Any]:
        here = (
            None if page == 0 and offset == 0 else self._token(_NEXT, listing, offset)
        )
        previous = next_ = None
        if page > 0:
            start = max(offset - size, 0)
            previous = self._url(
                listing, size, page - 1, self._token(_PREVIOUS, listing, start)
            )
        if offset + size < len(listing.records):
            next_ = self._url(
                listing, size, page + 1, self._token(_NEXT, listing, offset + size)
            )
        return {
            "page": page,
            "page_size": size,
            "first_page_url": self._url(listing, size, 0, None),
            "previous_page_url": previous,
            "url": self._url(listing, size, page, here),
            "next_page_url": next_,
            "key": listing.key,
        }

    def _url(self, listing: Listing, size: int, page: int, token: str | None) -> str:
        url = f"{self._base_url}{listing.path}?PageSize={size}&Page={page}"
        return url if token is None else f"{url}&PageToken={token}"

    def _token(self, prefix: str, listing: Listing, offset: int) -> str:
        raw = offset.to_bytes(_OFFSET_BYTES, "big") + self._mac(listing, offset)
        return prefix + base64.urlsafe_b64encode(raw).decode("ascii")

    def _offset(self, listing: Listing, token: str) -> int | None:
        """Return where a page token starts, or None if we did not issue it."""
        if len(token) != _TOKEN_LENGTH or token[:2] not in (_NEXT, _PREVIOUS):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[2:])
        except (binascii.Error, ValueError):
            return None

        offset = int.from_bytes(raw[:_OFFSET_BYTES], "big")
        if not hmac.compare_digest(raw[_OFFSET_BYTES:], self._mac(listing, offset)):
            return None
        return offset if offset <= len(listing.records) else None

    def _mac(self, listing: Listing, offset: int) -> bytes:
        message = f"{listing.path}:{offset}".encode()
        digest = hashlib.blake2b(message, key=self._secret, digest_size=_MAC_BYTES)
        return digest.digest()


def _page_size(text: str | None, cap: int) -> int | None:
    """Return the page size the server uses, or None if ``text`` is invalid."""
    if text is None:
        return min(DEFAULT_PAGE_SIZE, cap)
    asked = _integer(text)
    if asked is None or not 1 <= asked <= MAX_PAGE_SIZE:
        return None
    return min(asked, cap)


def _page_index(text: str | None) -> int | None:
    if text is None:
        return 0
    page = _integer(text)
    return page if page is not None and page >= 0 else None


def _integer(text: str) -> int | None:
    # Plain digits only: int() would also take " 7", "+7" and "7_0".
    return int(text) if text.isascii() and text.isdigit() else None


def _invalid(message: str) -> Reply:
    return twilio_error(400, INVALID_PARAMETER, message)
