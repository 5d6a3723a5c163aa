"""Helpers for tests that load through the bundled emulator's fault plans (#3).

The fault lists name every transient failure the issue asks the loader to
survive; :func:`label` gives each a readable test id and report key, and
:class:`VirtualClock` lets the emulator's rate limit run on recorded sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest

from conv_frames.emulator import Emulator, Fault
from conv_frames.emulator import _server as emulator_server
from conv_frames.emulator._limits import RateLimit

#: Seconds a read may wait for the server: what one stall costs a load.
READ_TIMEOUT = 0.2
#: (connect, read) timeouts for loads that meet stalls.
TIMEOUT = (5.0, READ_TIMEOUT)
#: How long a stall holds its answer: well past READ_TIMEOUT.
STALL_SECONDS = 1.0
#: An HTTP date long gone.
PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"


def retry_after(text: str) -> Fault:
    """A 429 whose ``Retry-After`` header is ``text`` exactly."""
    return Fault("status_429", retry_after_form="text", retry_after_text=text)


#: 429s with each form of ``Retry-After``, the odd ones included.
RETRY_AFTER_FAULTS = (
    Fault("status_429", retry_after=1),
    Fault("status_429", retry_after_form="http_date", retry_after=1),
    Fault("status_429", retry_after_form="absent"),
    Fault("status_429", retry_after=0),
    retry_after("1.5"),
    retry_after(PAST_DATE),
    retry_after("-5"),
    retry_after("soon"),
    Fault("status_429", retry_after=10**9),
)
#: 5xx answers, as Twilio's JSON and as a gateway's HTML page.
SERVER_FAULTS = (
    Fault("status_500"),
    Fault("status_502"),
    Fault("status_503"),
    Fault("status_504"),
    Fault("status_500", html=True),
    Fault("html_502"),
    Fault("html_503"),
    Fault("html_504"),
)
#: Connections that break, answers cut short, and an answer that never comes.
NETWORK_FAULTS = (
    Fault("reset_before_body"),
    Fault("reset_mid_body"),
    Fault("short_body"),
    Fault("stall", seconds=STALL_SECONDS),
)
#: A 200 that is not the page: a proxy's HTML, or nothing.
BODY_FAULTS = (Fault("html_200"), Fault("empty_200"))

EVERY_TRANSIENT_FAULT = (
    *RETRY_AFTER_FAULTS,
    *SERVER_FAULTS,
    *NETWORK_FAULTS,
    *BODY_FAULTS,
)


def label(fault: Fault) -> str:
    """A short name for a fault and its options, for ids and reports."""
    if fault.kind == "status_429":
        form = fault.retry_after_form
        if form == "absent":
            return "429 no Retry-After"
        if form == "text" and fault.retry_after_text == PAST_DATE:
            return "429 Retry-After date in the past"
        if form == "text":
            return f"429 Retry-After {fault.retry_after_text!r}"
        if form == "http_date":
            return f"429 Retry-After date +{fault.retry_after}s"
        return f"429 Retry-After {fault.retry_after}"
    if fault.kind.startswith("status_"):
        status = fault.kind.removeprefix("status_")
        return f"{status} HTML" if fault.html else f"{status} JSON"
    if fault.kind.startswith("html_5"):
        return f"{fault.kind.removeprefix('html_')} HTML"
    if fault.kind == "stall":
        return f"stall {fault.seconds:g} s"
    return fault.kind


def credentials(emulator: Emulator, *, api_key: bool = False) -> dict[str, Any]:
    """Keyword arguments that point a load at ``emulator``."""
    options: dict[str, Any] = {
        "account_sid": emulator.account_sid,
        "base_url": emulator.base_url,
    }
    if api_key:
        options.update(api_key=emulator.api_key, api_secret=emulator.api_secret)
    else:
        options["auth_token"] = emulator.auth_token
    return options


class VirtualClock:
    """Time that passes only when the loader sleeps.

    Installed as the emulator's rate-limit clock, it lets a load wait out the
    limit on recorded sleeps: each ``Retry-After`` the loader honours moves
    the clock that far.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record a wait and let that much time pass."""
        self.waits.append(seconds)
        self.now += seconds

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make emulators started from now on limit rates on this clock."""

        def rate_limit(rate: float) -> RateLimit:
            return RateLimit(rate, clock=self)

        monkeypatch.setattr(emulator_server, "RateLimit", rate_limit)
