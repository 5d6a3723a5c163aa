"""Shared fixtures: an environment without Twilio settings, and a sleep recorder."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_twilio_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the developer's TWILIO_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)
    return


class SleepRecorder:
    """Stands in for ``time.sleep``: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    """A recorder to pass as ``sleep=``; its ``waits`` lists the requested waits."""
    return SleepRecorder()
