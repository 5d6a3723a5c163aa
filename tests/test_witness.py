"""An independent witness: Twilio's own Python SDK, pointed at the emulator.

The SDK builds its own URLs, pages with its own code and decodes with its own
models. If it lists the same users as conv_frames, neither the loader nor the
emulator can be wrong in the same way without the other noticing. Every
request the SDK sends goes to the emulator: its base URL is overridden, and
its HTTP client refuses any other host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client as TwilioClient

import conv_frames
from conv_frames.emulator import Emulator


class LoopbackOnly(TwilioHttpClient):
    """The SDK's HTTP client, refusing any host but the emulator's; logs URLs."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.urls: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts, allowed = urlsplit(url), urlsplit(self.base_url)
        assert (parts.hostname, parts.port) == (allowed.hostname, allowed.port), url
        self.urls.append(url)
        return super().request(method, url, *args, **kwargs)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(users=[173, 9], seed=17) as running:
        yield running


@pytest.fixture
def sdk(emulator: Emulator) -> tuple[TwilioClient, LoopbackOnly]:
    http = LoopbackOnly(emulator.base_url)
    client = TwilioClient(emulator.account_sid, emulator.auth_token, http_client=http)
    client.conversations.base_url = emulator.base_url
    return client, http


def credentials(emulator: Emulator) -> dict[str, Any]:
    return {
        "account_sid": emulator.account_sid,
        "auth_token": emulator.auth_token,
        "base_url": emulator.base_url,
    }


def as_seen_by_sdk(users: list[Any]) -> list[tuple[str, str, Any]]:
    return [(u.sid, u.identity, json.loads(u.attributes)) for u in users]


def as_loaded(frame: Any) -> list[tuple[str, str, Any]]:
    return list(zip(frame["sid"], frame["identity"], frame["attributes"], strict=True))


def test_the_sdk_lists_the_same_users_as_load_users(
    emulator: Emulator, sdk: tuple[TwilioClient, LoopbackOnly]
) -> None:
    client, http = sdk
    sent_before = len(emulator.requests)

    users = client.conversations.v1.services(emulator.service_sid).users.list(
        page_size=50
    )
    frame = conv_frames.load_users(emulator.service_sid, **credentials(emulator))

    assert len(users) == len(frame) == 173
    assert as_seen_by_sdk(users) == as_loaded(frame)
    assert [u.date_created for u in users] == frame["date_created"].tolist()
    # 4 pages each for the SDK and the loader, all logged by the emulator.
    assert len(http.urls) == 4
    assert len(emulator.requests) - sent_before == 8
    users_path = f"/v1/Services/{emulator.service_sid}/Users"
    assert {r.path for r in emulator.requests[sent_before:]} == {users_path}


def test_the_sdk_sees_the_services_and_the_default_service_the_export_wrote(
    emulator: Emulator, sdk: tuple[TwilioClient, LoopbackOnly], tmp_path: Path
) -> None:
    client, _ = sdk
    run = conv_frames.export_snapshots(
        tmp_path, all_services=True, default_service=True, **credentials(emulator)
    )

    services = [s.sid for s in client.conversations.v1.services.list()]
    default_users = client.conversations.v1.users.list()
    second = client.conversations.v1.services(emulator.service_sids[1]).users.list()

    assert [s.service_sid for s in run.services] == services
    assert as_seen_by_sdk(default_users) == as_loaded(
        conv_frames.read_snapshot(tmp_path, emulator.service_sid)
    )
    assert as_seen_by_sdk(second) == as_loaded(
        conv_frames.read_snapshot(tmp_path, emulator.service_sids[1])
    )
