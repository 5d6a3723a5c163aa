"""The other ways to get a service's users, and the floor under all of them.

Each rival ends with the frame ``load_users`` returns, typed the same way
(:func:`check_same_frame` proves it before anything is timed):

- :func:`load_with_twilio_sdk`: Twilio's own SDK, ``users.list(page_size=50)``,
  pointed at the emulator and refusing any other host;
- :func:`load_with_requests`: a plain ``requests.Session`` loop, then pandas
  with ``to_datetime``, ``astype`` and ``json.loads`` per attributes value.

The floor (:func:`walk_floor`) fetches the same pages over one ``http.client``
keep-alive connection and decodes each with ``orjson.loads``, nothing else.
"""

from __future__ import annotations

import base64
import http.client
import json
import zlib
from typing import Any
from urllib.parse import urlsplit

import orjson
import pandas as pd
import requests
from pandas.testing import assert_frame_equal

# twilio ships no type hints: its names are Any here.
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.rest import Client as TwilioClient  # type: ignore[import-untyped]

import conv_frames
from conv_frames._frame import (
    BatchCollector,
    UserBatch,
    batches_to_frame,
    normalize_records,
)
from conv_frames._schema import (
    BOOLEAN_COLUMNS,
    COLUMNS,
    STRING_COLUMNS,
    TIMESTAMP_COLUMNS,
)

from ._server import ServerInfo

__all__ = [
    "check_same_frame",
    "decode_pages",
    "fetch_pages",
    "frame_from_pages",
    "load_with_conv_frames",
    "load_with_requests",
    "load_with_twilio_sdk",
    "normalize_pages",
    "walk_floor",
]

PAGE_SIZE = 50


def load_with_conv_frames(info: ServerInfo, users: int) -> pd.DataFrame:
    """The subject: ``conv_frames.load_users`` with its defaults."""
    return conv_frames.load_users(
        info.service_for(users),
        page_size=PAGE_SIZE,
        account_sid=info.account_sid,
        auth_token=info.auth_token,
        base_url=info.base_url,
    )


def load_with_twilio_sdk(info: ServerInfo, users: int) -> pd.DataFrame:
    """Twilio's SDK lists the users; pandas types them as load_users does."""
    client = TwilioClient(
        info.account_sid, info.auth_token, http_client=_EmulatorOnly(info.base_url)
    )
    client.edge = client.region = None  # no TWILIO_EDGE/REGION host rewriting
    client.conversations.base_url = info.base_url
    service = client.conversations.v1.services(info.service_for(users))
    listed = service.users.list(page_size=PAGE_SIZE)
    rows = [{name: getattr(user, name) for name in COLUMNS} for user in listed]
    return _typed(pd.DataFrame(rows, columns=list(COLUMNS)))


def load_with_requests(info: ServerInfo, users: int) -> pd.DataFrame:
    """A plain requests loop over the pages, then naive pandas typing."""
    rows: list[dict[str, Any]] = []
    with requests.Session() as session:
        session.auth = (info.account_sid, info.auth_token)
        url: str | None = _first_url(info, users)
        while url:
            answer = session.get(url, timeout=30)
            answer.raise_for_status()
            page = answer.json()
            rows.extend(page["users"])
            url = page["meta"]["next_page_url"]
    return _typed(pd.DataFrame(rows, columns=list(COLUMNS)))


def walk_floor(info: ServerInfo, users: int) -> int:
    """Fetch every page on one keep-alive connection and decode it; keep nothing.

    Returns:
        The number of pages.
    """
    return len(fetch_pages(info, users, keep=False))


def fetch_pages(
    info: ServerInfo, users: int, *, keep: bool = True, gzip: bool = False
) -> list[bytes]:
    """Every page's body, fetched the floor's way (kept only if ``keep``).

    ``gzip`` asks for compressed pages (and keeps them compressed): a walk that
    makes the emulator compress and cache each page before rivals that ask.
    """
    parts = urlsplit(info.base_url)
    host = parts.hostname or "127.0.0.1"
    connection = http.client.HTTPConnection(host, parts.port, timeout=30)
    pair = f"{info.account_sid}:{info.auth_token}".encode()
    headers = {
        "Authorization": "Basic " + base64.b64encode(pair).decode(),
        "Accept": "application/json",
        "Accept-Encoding": "gzip" if gzip else "identity",
    }
    bodies: list[bytes] = []
    target: str | None = _first_url(info, users)[len(info.base_url) :]
    try:
        while target:
            connection.request("GET", target, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"the emulator answered {answer.status}")
            page = zlib.decompress(body, wbits=31) if gzip else body
            next_url = orjson.loads(page)["meta"]["next_page_url"]
            target = next_url[len(info.base_url) :] if next_url else None
            bodies.append(body if keep else b"")
    finally:
        connection.close()
    return bodies


def decode_pages(bodies: list[bytes]) -> list[Any]:
    """``orjson.loads`` of each page, kept, as a frame builder would keep them."""
    return [orjson.loads(body) for body in bodies]


def normalize_pages(bodies: list[bytes]) -> list[UserBatch]:
    """The loader's per-page work on bytes: decode, then normalize to Arrow."""
    return [normalize_records(orjson.loads(body)["users"]) for body in bodies]


def frame_from_pages(bodies: list[bytes]) -> pd.DataFrame:
    """The same, and on to the DataFrame, keeping batches as the loader does."""
    collector = BatchCollector()
    for body in bodies:
        collector.append(normalize_records(orjson.loads(body)["users"]))
    return batches_to_frame(collector.batches())


def check_same_frame(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    """Raise unless a rival's frame equals the loader's, dtypes included."""
    expected = expected.copy(deep=False)
    expected.attrs = {}
    assert_frame_equal(actual, expected)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for name in (*STRING_COLUMNS, "url"):
        frame[name] = frame[name].astype("string")
    for name in TIMESTAMP_COLUMNS:
        moments = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        frame[name] = moments.astype("datetime64[us, UTC]")
    for name in BOOLEAN_COLUMNS:
        frame[name] = frame[name].astype("boolean")
    frame["attributes"] = frame["attributes"].map(json.loads)
    return frame


def _first_url(info: ServerInfo, users: int) -> str:
    service = info.service_for(users)
    return f"{info.base_url}/v1/Services/{service}/Users?PageSize={PAGE_SIZE}"


class _EmulatorOnly(TwilioHttpClient):  # type: ignore[misc]  # an untyped base
    """Twilio's HTTP client, refusing any URL outside the emulator's origin."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._origin = base_url + "/"

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Send as Twilio's client does, if ``url`` is the emulator's."""
        if not url.startswith(self._origin):
            raise RuntimeError(f"refused {method} {url}: only the emulator is allowed")
        return super().request(method, url, *args, **kwargs)
