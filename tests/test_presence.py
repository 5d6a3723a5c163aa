"""Presence: per-user fetches in an adaptive pool, against the bundled emulator (#5)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import requests
from conftest import SleepRecorder
from scripted import count_connections

import conv_frames
import conv_frames._client
from conv_frames import APIError, ConfigurationError, ProgressEvent
from conv_frames._presence import (
    MAX_CONCURRENCY,
    MAX_THREADS,
    AdaptiveLimit,
    Answer,
    Cancelled,
    Ticket,
    pool_threads,
)
from conv_frames.emulator import Emulator, Fault, FaultPlan
from conv_frames.emulator._data import presence_of

MISSING_USER = "US" + "f" * 32


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(users=240, seed=5) as emulator:
        yield emulator


def options(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {
        "account_sid": emu.account_sid,
        "auth_token": emu.auth_token,
        "base_url": emu.base_url,
        **extra,
    }


def listed(emu: Emulator, count: int | None = None) -> pd.DataFrame:
    """The users as the list endpoint gives them, without a request."""
    return conv_frames.users_frame(emu.users()[:count])


def expected(frame: pd.DataFrame, *, reachability: bool = True) -> list[Any]:
    return [presence_of(sid, reachability=reachability) for sid in frame["sid"]]


def presence(frame: pd.DataFrame) -> list[Any]:
    """Each row's (is_online, is_notifiable), with None for null."""
    pairs = zip(frame["is_online"], frame["is_notifiable"], strict=True)
    return [tuple(None if pd.isna(v) else bool(v) for v in pair) for pair in pairs]


def user_fetches(emu: Emulator) -> Counter[str]:
    """Answers of 200 to single-user fetches, by user SID."""
    return Counter(
        entry.path.rsplit("/", 1)[-1]
        for entry in emu.requests
        if entry.status == 200 and entry.path.count("/") == 5
    )


# -- values --------------------------------------------------------------------


def test_presence_equals_the_emulators_for_every_user(emu: Emulator) -> None:
    users = conv_frames.load_users(emu.service_sid, **options(emu))
    before = datetime.now(UTC)

    filled = conv_frames.fill_presence(users, **options(emu))

    assert presence(filled) == expected(users)
    assert {pair[0] for pair in presence(filled)} == {True, False, None}
    assert {pair[1] for pair in presence(filled)} == {True, False, None}
    assert str(filled["is_online"].dtype) == "boolean"
    assert str(filled["is_notifiable"].dtype) == "boolean"
    fetched_at = datetime.fromisoformat(filled.attrs["presence_fetched_at"])
    assert before <= fetched_at <= datetime.now(UTC)
    assert filled.attrs["presence_users"] == 240
    assert filled.attrs["presence_requests"] == 240
    assert filled.attrs["presence_failed"] == 0
    assert filled.attrs["rows"] == 240  # the load's provenance is kept
    # The input frame is left as it was: presence is unknown there.
    assert users["is_online"].isna().all()


def test_the_other_columns_are_untouched(emu: Emulator) -> None:
    users = listed(emu, 30)

    filled = conv_frames.fill_presence(users, **options(emu))

    others = [c for c in users.columns if c not in ("is_online", "is_notifiable")]
    pd.testing.assert_frame_equal(filled[others], users[others])


def test_reachability_off_leaves_every_user_null_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Emulator(users=25, reachability=False) as emu:
        caplog.set_level(logging.WARNING, logger="conv_frames")
        filled = conv_frames.fill_presence(listed(emu), **options(emu))

    assert presence(filled) == [(None, None)] * 25
    assert "reachability" in caplog.text


def test_pyarrow_backend_keeps_its_dtype(emu: Emulator) -> None:
    users = conv_frames.users_frame(emu.users()[:20], dtype_backend="pyarrow")

    filled = conv_frames.fill_presence(users, **options(emu))

    assert filled["is_online"].dtype == pd.ArrowDtype(pa.bool_())
    assert presence(filled) == expected(users)


def test_frame_without_presence_columns_gets_them(emu: Emulator) -> None:
    users = listed(emu, 10).drop(columns=["is_online", "is_notifiable"])

    filled = conv_frames.fill_presence(users, **options(emu))

    assert presence(filled) == expected(users)
    assert str(filled["is_online"].dtype) == "boolean"


def test_empty_frame_sends_nothing() -> None:
    with Emulator(users=3) as emu:
        filled = conv_frames.fill_presence(listed(emu, 0), **options(emu))
        sent = emu.requests

    assert filled.empty
    assert sent == []
    assert filled.attrs["presence_users"] == 0


# -- nothing fetched twice -------------------------------------------------------


def test_duplicate_sids_are_fetched_once() -> None:
    with Emulator(users=40) as emu:
        users = listed(emu)
        doubled = pd.concat([users, users.iloc[::-1]], ignore_index=True)

        filled = conv_frames.fill_presence(doubled, **options(emu))
        fetches = user_fetches(emu)

    assert presence(filled) == expected(doubled)
    assert len(fetches) == 40
    assert set(fetches.values()) == {1}
    assert filled.attrs["presence_requests"] == 40


def test_load_users_with_presence_fills_and_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    with Emulator(users=120) as emu:
        users = conv_frames.load_users(
            emu.service_sid, presence=True, parquet_path=path, **options(emu)
        )

    assert presence(users) == expected(users)
    again = conv_frames.read_parquet(path)
    pd.testing.assert_frame_equal(again, users)
    assert again.attrs["presence_fetched_at"] == users.attrs["presence_fetched_at"]


def test_load_users_passes_the_presence_options_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    fetcher = conv_frames._client.PresenceFetcher

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return fetcher(*args, **kwargs)

    monkeypatch.setattr(conv_frames._client, "PresenceFetcher", recording)
    with Emulator(users=30, max_concurrency=2, latency=0.005) as emu:
        users = conv_frames.load_users(
            emu.service_sid,
            presence=True,
            presence_max_concurrency=2,
            presence_initial_concurrency=1,
            presence_errors="null",
            **options(emu),
        )

    assert presence(users) == expected(users)
    assert [(m["max_concurrency"], m["initial_concurrency"]) for m in made] == [(2, 1)]
    assert users.attrs["presence_max_concurrency"] == 2
    assert users.attrs["presence_peak_concurrency"] <= 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"presence": "yes"}, "presence='yes' must be True (also fetch each user's"),
        ({"presence": 1}, "presence=1 must be True"),
        (
            {"presence": True, "presence_max_concurrency": 0},
            "presence_max_concurrency=0 must be an integer >= 1",
        ),
        (
            {"presence": True, "presence_initial_concurrency": 2.5},
            "presence_initial_concurrency=2.5 must be an integer >= 1",
        ),
        (
            {"presence": True, "presence_errors": "ignore"},
            "presence_errors='ignore' is not supported; use 'raise' or 'null'",
        ),
        (
            {"presence_max_concurrency": 8, "presence_errors": "null"},
            "presence_max_concurrency, presence_errors only apply with presence=True",
        ),
    ],
)
def test_load_users_refuses_bad_presence_arguments_before_any_request(
    arguments: dict[str, Any], message: str
) -> None:
    with Emulator(users=3) as emu:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            conv_frames.load_users(emu.service_sid, **arguments, **options(emu))
        assert emu.requests == []


class CountingSession(requests.Session):
    """A caller's session: counts what it sends and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.closed = False

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        self.sent += 1
        return super().send(request, **kwargs)

    def close(self) -> None:
        self.closed = True
        super().close()


def test_a_session_given_to_the_client_carries_the_fetches(emu: Emulator) -> None:
    session = CountingSession()
    with conv_frames.Client(session=session, **options(emu)) as client:
        filled = client.fill_presence(listed(emu, 12))

    assert presence(filled) == expected(filled)
    assert session.sent == 12
    assert not session.closed  # lent, not given: the caller closes it


def test_the_fetches_take_the_direct_lane_with_a_connection_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("requests was used")

    with Emulator(users=200, seed=1) as emu:
        users = listed(emu)
        monkeypatch.setattr(requests.Session, "request", refuse)
        opened = count_connections(monkeypatch)
        filled = conv_frames.fill_presence(
            users, max_concurrency=4, initial_concurrency=4, **options(emu)
        )

    assert presence(filled) == expected(users)
    # Two workers a slot (8), each keeping its connection for every fetch: a
    # lane that kept one would open a connection for most of the 200.
    assert 1 <= len(opened) <= 8


# -- 429 storms -----------------------------------------------------------------


def test_a_concurrency_limit_slows_the_pool_and_loses_nothing(
    sleeps: SleepRecorder,
) -> None:
    with Emulator(users=150, max_concurrency=3, latency=0.01) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(
            users,
            max_concurrency=16,
            initial_concurrency=16,
            **options(emu, sleep=sleeps),
        )
        log = emu.requests
        fetches = user_fetches(emu)

    refused = [entry for entry in log if entry.status == 429]
    assert presence(filled) == expected(users)
    assert refused, "the server never pushed back: the test proves nothing"
    assert set(fetches.values()) == {1}  # nobody fetched again after success
    assert len(fetches) == 150
    assert filled.attrs["presence_requests"] == len(log)
    assert filled.attrs["presence_retries"] == len(refused)
    # The pool came down from 16 to what the server takes, and waited as told.
    assert 1 <= filled.attrs["presence_pushback_concurrency"] <= 16
    assert filled.attrs["presence_max_concurrency"] == 16
    assert set(sleeps.waits) == {1.0}


def test_a_burst_of_429s_loses_nothing(sleeps: SleepRecorder) -> None:
    burst = FaultPlan(at={10: ["status_429"] * 60})
    with Emulator(users=100, faults=burst) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(users, **options(emu, sleep=sleeps))
        fetches = user_fetches(emu)

    assert presence(filled) == expected(users)
    assert set(fetches.values()) == {1}
    assert filled.attrs["presence_retries"] == 60
    assert len(sleeps.waits) == 60


def test_a_429_spends_time_not_attempts(sleeps: SleepRecorder) -> None:
    # One user, refused 7 times: more than max_attempts, less than the budget.
    with Emulator(users=1, faults=FaultPlan(at={0: ["status_429"] * 7})) as emu:
        filled = conv_frames.fill_presence(
            listed(emu), **options(emu, max_attempts=2, sleep=sleeps)
        )

    assert presence(filled) == expected(filled)
    assert filled.attrs["presence_requests"] == 8
    assert sleeps.waits == [1.0] * 7


def test_endless_429s_fail_once_the_wait_budget_is_spent(
    sleeps: SleepRecorder,
) -> None:
    always = FaultPlan(rate=1.0, kinds=["status_429"])
    with Emulator(users=2, faults=always) as emu:
        with pytest.raises(APIError) as caught:
            conv_frames.fill_presence(
                listed(emu), **options(emu, max_total_wait=4.0, sleep=sleeps)
            )

    assert caught.value.status == 429
    assert caught.value.code == 20429
    assert sum(sleeps.waits) <= 4.0 + 2 * 1.0


def test_server_errors_are_retried_by_the_transport_policy(
    sleeps: SleepRecorder,
) -> None:
    faults = FaultPlan(at={3: "status_503", 7: "reset_before_body", 9: "short_body"})
    with Emulator(users=30, faults=faults) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(users, **options(emu, sleep=sleeps))

    assert presence(filled) == expected(users)
    assert filled.attrs["presence_retries"] == 3
    assert len(sleeps.waits) == 3


@pytest.mark.parametrize(
    ("kind", "reason"), [("status_503", "HTTP 503"), ("status_429", "HTTP 429")]
)
def test_only_a_429_narrows_the_pool(
    kind: str, reason: str, sleeps: SleepRecorder
) -> None:
    # A fifth of all requests fail: a 503 says the server erred, a 429 that
    # too many were in flight. Ten attempts outlast any run of 503s here.
    faults = FaultPlan(rate=0.2, seed=11, kinds=[kind])
    events: list[ProgressEvent] = []
    with Emulator(users=300, faults=faults) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(
            users,
            max_concurrency=8,
            initial_concurrency=8,
            progress=events.append,
            **options(emu, max_attempts=10, sleep=sleeps),
        )
        fetches = user_fetches(emu)

    assert presence(filled) == expected(users)
    assert set(fetches.values()) == {1}
    retries = filled.attrs["presence_retries"]
    assert retries >= 40
    assert filled.attrs["presence_retry_reasons"] == {reason: retries}
    assert filled.attrs["presence_requests"] == 300 + retries
    limits = [event.concurrency for event in events]
    if kind == "status_503":
        assert filled.attrs["presence_pushback_concurrency"] is None
        assert set(limits) == {8}  # never narrowed
    else:
        assert 1 <= filled.attrs["presence_pushback_concurrency"] <= 8
        assert min(limits) < 8


def test_retries_log_at_debug_and_once_at_the_end(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    faults = FaultPlan(
        at={3: "status_503", 7: "reset_before_body", 9: "status_503", 12: "status_429"}
    )
    caplog.set_level(logging.DEBUG, logger="conv_frames")
    with Emulator(users=30, faults=faults) as emu:
        filled = conv_frames.fill_presence(
            listed(emu), max_concurrency=1, **options(emu, sleep=sleeps)
        )

    mine = [r for r in caplog.records if r.name.startswith("conv_frames")]
    retried = [r for r in mine if r.getMessage().startswith("retrying a user after")]
    assert [r.levelno for r in retried] == [logging.DEBUG] * 4
    assert [(r.levelname, r.getMessage()) for r in mine if r.levelno > logging.DEBUG][
        :1
    ] == [
        (
            "INFO",
            f"filled presence of 30 users in {filled.attrs['presence_seconds']:.2f} s "
            "(34 requests, at most 1 in flight, 4 retries: 2 HTTP 503, 1 HTTP 429, "
            "1 TransportError)",
        )
    ]
    warnings = [r.getMessage() for r in mine if r.levelno >= logging.WARNING]
    assert warnings == [
        "presence: 3 requests were retried after faults: 2 HTTP 503, 1 TransportError"
    ]
    assert filled.attrs["presence_retry_reasons"] == {
        "HTTP 503": 2,
        "TransportError": 1,
        "HTTP 429": 1,
    }


def test_the_logged_wait_is_the_wait_slept(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Retry-After 30 s, capped at 2 s; one attempt each, so every 429 goes
    # round the pool's own loop after the transport's.
    slow = Fault("status_429", retry_after=30)
    caplog.set_level(logging.DEBUG, logger="conv_frames")
    with Emulator(users=1, faults=FaultPlan(at={0: [slow] * 3})) as emu:
        filled = conv_frames.fill_presence(
            listed(emu), **options(emu, max_attempts=1, max_retry_wait=2, sleep=sleeps)
        )

    retried = [
        r.getMessage() for r in caplog.records if "retrying a user" in r.getMessage()
    ]
    assert presence(filled) == expected(filled)
    assert sleeps.waits == [2.0, 2.0, 2.0]
    assert len(retried) == 3
    assert all("waiting 2.00 s" in message for message in retried)


def test_progress_reports_the_requests_in_flight_apart_from_the_limit(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[ProgressEvent] = []

    conv_frames.fill_presence(
        listed(emu, 3),
        max_concurrency=8,
        initial_concurrency=8,
        progress=events.append,
        **options(emu),
    )
    conv_frames.fill_presence(
        listed(emu, 3),
        max_concurrency=8,
        initial_concurrency=8,
        progress=True,
        **options(emu),
    )

    last = events[-1]
    assert (last.finished, last.concurrency, last.in_flight) == (True, 8, 0)
    assert all(event.in_flight <= 3 for event in events)  # 3 users, never 8
    assert "in_flight=0, limit=8" in capsys.readouterr().err


# -- failures ---------------------------------------------------------------------


def with_missing_user(emu: Emulator, count: int) -> pd.DataFrame:
    users = listed(emu, count)
    gone = users.iloc[[0]].assign(sid=MISSING_USER)
    return pd.concat([users, gone], ignore_index=True)


def test_a_user_that_cannot_be_fetched_is_an_error(emu: Emulator) -> None:
    with pytest.raises(APIError) as caught:
        conv_frames.fill_presence(with_missing_user(emu, 20), **options(emu))

    assert caught.value.status == 404
    assert MISSING_USER in caught.value.url
    assert "pass errors='null' to leave such users null" in str(caught.value)


def test_an_error_does_not_wait_for_a_stalled_request() -> None:
    # The first request stalls for 8 s; a 404 of one of the two missing users
    # stops the fill, which must not sit out the stall before raising.
    stall = FaultPlan(at={0: Fault("stall", seconds=8.0)})
    with Emulator(users=1, faults=stall) as emu:
        one = listed(emu)
        users = pd.concat(
            [one, one.assign(sid=MISSING_USER), one.assign(sid="US" + "e" * 32)]
        )
        clock = time.monotonic()
        with pytest.raises(APIError) as caught:
            conv_frames.fill_presence(users, initial_concurrency=3, **options(emu))
        elapsed = time.monotonic() - clock

    assert caught.value.status == 404
    assert elapsed < 4.0  # a generous bound; waiting would take 8 s


def test_a_failed_fill_keeps_what_it_fetched_and_resumes(
    sleeps: SleepRecorder,
) -> None:
    # Every request from the 40th on fails; the fill stops with the users
    # fetched so far in the error's frame, and a resume fetches only the rest.
    with Emulator(users=120, seed=4) as emu:
        users = listed(emu)
        clean = conv_frames.fill_presence(users, **options(emu))
    failing = FaultPlan(at={n: "status_503" for n in range(40, 400)})
    with Emulator(users=120, seed=4, faults=failing) as emu:
        with pytest.raises(APIError) as caught:
            conv_frames.fill_presence(
                users, **options(emu, max_attempts=1, sleep=sleeps)
            )
    partial = caught.value.frame
    assert partial is not None
    fetched = [sid for sid in users["sid"] if sid not in caught.value.unfilled]
    assert 30 <= len(fetched) < 120
    assert partial.attrs["presence_unfilled_sids"] == list(caught.value.unfilled)
    rows = partial["sid"].isin(fetched).to_numpy()
    assert presence(partial[rows]) == presence(clean[rows])
    assert presence(partial[~rows]) == [(None, None)] * int((~rows).sum())

    with Emulator(users=120, seed=4) as emu:
        resumed = conv_frames.fill_presence(partial, only_unfilled=True, **options(emu))
        fetches = user_fetches(emu)

    assert presence(resumed) == presence(clean)
    assert sorted(fetches) == sorted(caught.value.unfilled)
    assert resumed.attrs["presence_users"] == 120
    assert resumed.attrs["presence_users_fetched"] == len(caught.value.unfilled)
    assert resumed.attrs["presence_unfilled_sids"] == []


def test_a_lenient_fill_that_fails_keeps_the_users_it_gave_up_on(
    sleeps: SleepRecorder,
) -> None:
    # The gone user comes first and is recorded; from the 30th request on the
    # server fails, and the fill stops. The gone user stays failed (not
    # fetched again); those the server failed are left for the resume.
    with Emulator(users=80, seed=4) as emu:
        users = listed(emu, 80)
        users = pd.concat([users.iloc[[0]].assign(sid=MISSING_USER), users])
        users = users.reset_index(drop=True)
        clean = conv_frames.fill_presence(users, errors="null", **options(emu))
    failing = FaultPlan(at={n: "status_503" for n in range(30, 400)})
    with Emulator(users=80, seed=4, faults=failing) as emu:
        with pytest.raises(conv_frames.TransportError) as caught:
            conv_frames.fill_presence(
                users, errors="null", **options(emu, max_attempts=1, sleep=sleeps)
            )
    partial = caught.value.frame
    assert partial is not None
    assert partial.attrs["presence_failed_sids"] == [MISSING_USER]
    assert partial.attrs["presence_failures"] == {MISSING_USER: "HTTP 404"}
    assert MISSING_USER not in caught.value.unfilled
    assert partial.attrs["presence_unfilled_sids"] == list(caught.value.unfilled)

    with Emulator(users=80, seed=4) as emu:
        resumed = conv_frames.fill_presence(
            partial, only_unfilled=True, errors="null", **options(emu)
        )
        fetches = user_fetches(emu)

    assert sorted(fetches) == sorted(caught.value.unfilled)
    assert presence(resumed) == presence(clean)
    pd.testing.assert_frame_equal(summary_of(resumed), summary_of(clean))


def summary_of(frame: pd.DataFrame) -> pd.DataFrame:
    summary = conv_frames.presence_summary(frame)
    summary.attrs.clear()  # when each fill ran differs, and is not compared
    return summary


def test_a_resumed_fill_describes_the_whole_frame(sleeps: SleepRecorder) -> None:
    # A strict fill stops on 503s; a lenient resume fills the rest, and leaves
    # the gone user failed. The frame then reads as one clean lenient fill.
    with Emulator(users=80, seed=4) as emu:
        users = with_missing_user(emu, 80)
        clean = conv_frames.fill_presence(users, errors="null", **options(emu))
    failing = FaultPlan(at={n: "status_503" for n in range(30, 400)})
    with Emulator(users=80, seed=4, faults=failing) as emu:
        with pytest.raises(APIError) as caught:
            conv_frames.fill_presence(
                users, **options(emu, max_attempts=1, sleep=sleeps)
            )
    partial = caught.value.frame
    assert partial is not None
    assert MISSING_USER in caught.value.unfilled
    assert partial.attrs["presence_failed_sids"] == []

    with Emulator(users=80, seed=4) as emu:
        lenient = options(emu, errors="null")
        resumed = conv_frames.fill_presence(partial, only_unfilled=True, **lenient)
        again = conv_frames.fill_presence(resumed, only_unfilled=True, **lenient)
        sent = len(emu.requests)

    assert sent == len(caught.value.unfilled)  # the second resume sent none
    assert again.attrs["presence_requests"] == 0
    for frame in (resumed, again):
        pd.testing.assert_frame_equal(summary_of(frame), summary_of(clean))
        assert frame.attrs["presence_unfilled_sids"] == []
        assert frame.attrs["presence_failed_sids"] == [MISSING_USER]
        assert frame.attrs["presence_failures"] == {MISSING_USER: "HTTP 404"}
        assert frame.attrs["presence_users"] == 81
        assert frame.attrs["presence_failed"] == 1
        assert (
            frame.attrs["presence_fetched_at"] == partial.attrs["presence_fetched_at"]
        )
    assert resumed.attrs["presence_users_fetched"] == len(caught.value.unfilled)
    assert again.attrs["presence_users_fetched"] == 0


def test_lenient_mode_leaves_a_counted_null_and_logs_once(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    users = with_missing_user(emu, 20)
    caplog.set_level(logging.WARNING, logger="conv_frames")

    filled = conv_frames.fill_presence(users, errors="null", **options(emu))

    assert presence(filled)[:20] == expected(users)[:20]
    assert presence(filled)[20] == (None, None)
    assert filled.attrs["presence_failed"] == 1
    assert filled.attrs["presence_failed_sids"] == [MISSING_USER]
    assert filled.attrs["presence_failures"] == {MISSING_USER: "HTTP 404"}
    failures = [r for r in caplog.records if "could not be fetched" in r.message]
    assert len(failures) == 1
    assert failures[0].message.startswith(
        "presence of 1 users could not be fetched and is left null (1 HTTP 404; "
        f"see frame.attrs['presence_failures']); the first, {MISSING_USER}: HTTP 404"
    )


def test_a_summary_counts_users_a_lenient_fill_failed_as_not_fetched(
    emu: Emulator,
) -> None:
    users = with_missing_user(emu, 20)

    filled = conv_frames.fill_presence(users, errors="null", **options(emu))
    summary = conv_frames.presence_summary(filled).set_index(["online", "notifiable"])

    nulls = sum(online is None for online, _ in expected(users)[:20])
    assert summary.loc[("not fetched", "not fetched"), "users"] == 1
    assert summary.loc[("not fetched", "all"), "users"] == 1
    assert summary.loc[("unknown", "all"), "users"] == nulls  # the API's nulls only
    assert summary.loc[("all", "all"), "users"] == 21


def test_lenient_failures_are_listed_in_frame_order(sleeps: SleepRecorder) -> None:
    # The first user meets two 503s and has two attempts; two users are gone.
    faults = FaultPlan(at={0: ["status_503", "status_503"]})
    settings = {"initial_concurrency": 1, "max_attempts": 2, "sleep": sleeps}
    gone = ["US" + "e" * 32, "US" + "d" * 32]
    with Emulator(users=6, faults=faults) as emu:
        users = listed(emu)
        users = pd.concat(
            [users, users.iloc[[1, 2]].assign(sid=gone)], ignore_index=True
        )
        filled = conv_frames.fill_presence(
            users, errors="null", **settings, **options(emu)
        )

    first = users["sid"].iloc[0]
    assert filled.attrs["presence_failed"] == 3
    assert filled.attrs["presence_failed_sids"] == [first, *gone]
    assert filled.attrs["presence_failures"] == {
        first: "HTTP 503",
        gone[0]: "HTTP 404",
        gone[1]: "HTTP 404",
    }


def test_a_lenient_load_keeps_its_failures_in_parquet(
    tmp_path: Path, sleeps: SleepRecorder
) -> None:
    # Request 0 lists the users; the first fetch meets two 503s in two attempts.
    faults = FaultPlan(at={1: ["status_503", "status_503"]})
    path = tmp_path / "users.parquet"
    with Emulator(users=6, faults=faults) as emu:
        users = conv_frames.load_users(
            emu.service_sid,
            presence=True,
            presence_errors="null",
            presence_initial_concurrency=1,
            parquet_path=path,
            **options(emu, max_attempts=2, sleep=sleeps),
        )

    first = users["sid"].iloc[0]
    assert users.attrs["presence_failures"] == {first: "HTTP 503"}
    again = conv_frames.read_parquet(path)
    assert again.attrs["presence_failed_sids"] == [first]
    assert again.attrs["presence_failures"] == {first: "HTTP 503"}


def test_a_frame_of_another_service_raises_even_in_lenient_mode(
    emu: Emulator,
) -> None:
    users = listed(emu, 25).assign(chat_service_sid="IS" + "0" * 32)

    with pytest.raises(APIError) as caught:
        conv_frames.fill_presence(users, errors="null", **options(emu))

    error = caught.value
    assert error.status == 404
    assert error.code == 20404
    assert str(error).startswith(f"HTTP 404 (Twilio error 20404) from {emu.base_url}")
    assert (
        "every one of the 25 users' fetches was answered HTTP 404 (The requested "
        in error.message
    )
    assert (
        f"so none of them is a user of service IS{'0' * 32} on account "
        f"{emu.account_sid} at {emu.base_url}. Check that the frame was loaded "
        "with these credentials and base_url" in error.message
    )
    assert isinstance(error.__cause__, APIError)


def test_a_frame_of_another_account_raises_even_in_lenient_mode(
    emu: Emulator,
) -> None:
    with Emulator(users=12, seed=99) as other:
        users = listed(other)

    with pytest.raises(APIError, match=f"service {users['chat_service_sid'][0]} on"):
        conv_frames.fill_presence(users, errors="null", **options(emu))


def test_faults_that_outlast_the_retries_fail_the_user(sleeps: SleepRecorder) -> None:
    # One request at a time: the first user meets both 503s, and max_attempts=2
    # cannot outlast them.
    faults = FaultPlan(at={0: ["status_503", "status_503"]})
    settings = {"initial_concurrency": 1, "max_attempts": 2, "sleep": sleeps}
    with Emulator(users=5, faults=faults) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(
            users, errors="null", **settings, **options(emu)
        )
    with Emulator(users=5, faults=faults) as emu:
        with pytest.raises(APIError) as caught:
            conv_frames.fill_presence(listed(emu), **settings, **options(emu))

    assert presence(filled)[0] == (None, None)
    assert presence(filled)[1:] == expected(users)[1:]
    assert filled.attrs["presence_failed"] == 1
    assert caught.value.status == 503
    assert caught.value.attempts == 2


def test_wrong_credentials_raise_even_in_lenient_mode(emu: Emulator) -> None:
    wrong = {**options(emu), "auth_token": "0" * 32}

    with pytest.raises(APIError) as caught:
        conv_frames.fill_presence(listed(emu, 30), errors="null", **wrong)

    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_concurrency": 0}, "max_concurrency=0"),
        ({"max_concurrency": True}, "max_concurrency=True"),
        ({"initial_concurrency": -1}, "initial_concurrency=-1"),
        ({"errors": "ignore"}, "errors='ignore'"),
        (
            {"max_concurrency": 10**6},
            "max_concurrency=1000000 is more than 256, the most requests in flight "
            "a presence fill keeps; pass at most 256",
        ),
        (
            {"only_unfilled": "yes"},
            "only_unfilled='yes' must be True (fetch only the users a failed fill "
            "left unfilled) or False (fetch every user)",
        ),
        ({"initial_concurrency": 257}, "initial_concurrency=257 is more than 256"),
        (
            {"max_concurrency": 4, "initial_concurrency": 8},
            "initial_concurrency=8 is more than max_concurrency=4; the pool starts "
            "at most at its maximum: lower initial_concurrency or raise "
            "max_concurrency",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    arguments: dict[str, Any], message: str
) -> None:
    with Emulator(users=3) as emu:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            conv_frames.fill_presence(listed(emu), **arguments, **options(emu))
        assert emu.requests == []


def test_the_pool_starts_no_more_threads_than_users_or_the_cap() -> None:
    assert pool_threads(3000, MAX_CONCURRENCY) == MAX_THREADS == 256
    assert pool_threads(3000, 8) == 16  # spares for workers waiting out a backoff
    assert pool_threads(5, MAX_CONCURRENCY) == 5

    seen: list[int] = []

    def count_workers(event: ProgressEvent) -> None:
        names = [thread.name for thread in threading.enumerate()]
        seen.append(sum(name.startswith("conv-frames-presence") for name in names))

    with Emulator(users=5) as emu:
        users = listed(emu)
        filled = conv_frames.fill_presence(
            users,
            max_concurrency=MAX_CONCURRENCY,
            progress=count_workers,
            **options(emu),
        )

    assert presence(filled) == expected(users)
    assert max(seen) <= 5
    assert filled.attrs["presence_threads"] == 5
    assert filled.attrs["presence_max_concurrency"] == 256
    assert filled.attrs["presence_pushback_concurrency"] is None  # never a 429
    assert 1 <= filled.attrs["presence_peak_concurrency"] <= 5


def test_a_frame_without_sids_is_refused(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="'sid'"):
        conv_frames.fill_presence(pd.DataFrame({"x": [1]}), **options(emu))
    with pytest.raises(ConfigurationError, match="row 1 has no user SID"):
        conv_frames.fill_presence(
            listed(emu, 2).assign(sid=["US" + "0" * 32, None]), **options(emu)
        )


def test_the_service_comes_from_attrs_when_the_column_is_missing(
    emu: Emulator,
) -> None:
    users = listed(emu, 5).drop(columns=["chat_service_sid"])
    users.attrs["service_sid"] = emu.service_sid

    filled = conv_frames.fill_presence(users, **options(emu))

    assert presence(filled) == expected(users)
    bare = pd.DataFrame({"sid": users["sid"]})  # no column, no attrs
    with pytest.raises(ConfigurationError, match="chat_service_sid"):
        conv_frames.fill_presence(bare, **options(emu))


def test_one_info_line_per_fill(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conv_frames")

    conv_frames.fill_presence(listed(emu, 12), **options(emu))

    lines = [r for r in caplog.records if r.message.startswith("filled presence")]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert lines[0].name.startswith("conv_frames")
    assert "filled presence of 12 users" in lines[0].message
    assert "(12 requests, at most " in lines[0].message
    assert lines[0].message.endswith(" in flight, 0 retries)")


# -- the adaptive limit -------------------------------------------------------------


class SaturatedPool:
    """Drives a limit as a busy pool does: every freed slot is taken again."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.in_flight: deque[Ticket] = deque()

    def answer(self, answer: Answer, times: int = 1) -> None:
        for _ in range(times):
            while len(self.in_flight) < int(self.limit.limit):
                self.in_flight.append(self.limit.acquire())
            self.limit.release(self.in_flight.popleft(), answer)

    def drain(self) -> None:
        while self.in_flight:
            self.limit.release(self.in_flight.popleft(), "none")


def test_slow_start_doubles_the_limit_each_round_trip() -> None:
    limit = AdaptiveLimit(64, initial=4)
    pool = SaturatedPool(limit)

    seen = []
    for round_trip in (4, 8, 16, 32, 64):
        pool.answer("clean", round_trip)
        seen.append(limit.limit)

    assert seen == [8, 16, 32, 64, 64]


def test_pushback_cuts_once_per_round_trip() -> None:
    limit = AdaptiveLimit(64, initial=20)
    tickets = [limit.acquire() for _ in range(20)]

    limit.release(tickets[-1], "pushback")  # sent with 20 in flight
    after_first = limit.limit
    for ticket in tickets[10:-1]:
        limit.release(ticket, "pushback")  # sent before the cut

    assert after_first == pytest.approx(14.0)
    assert limit.limit == pytest.approx(14.0)
    assert limit.ceiling == 20
    assert limit.pushbacks == 10


def test_after_a_pushback_growth_is_additive_and_careful_near_the_ceiling() -> None:
    limit = AdaptiveLimit(64, initial=11)
    tickets = [limit.acquire() for _ in range(11)]
    limit.release(tickets[-1], "pushback")  # refused with 11 in flight
    for ticket in tickets[:-1]:
        limit.release(ticket, "none")
    assert limit.limit == pytest.approx(7.7)
    assert limit.ceiling == 11
    pool = SaturatedPool(limit)

    pool.answer("clean", 8)  # +1/limit each: about one slot per round trip
    assert 8.6 < limit.limit < 8.8
    limit.probing = False
    pool.answer("clean", 60)
    assert int(limit.limit) == 10  # held one below the level refused
    limit.probing = True
    pool.answer("clean", 60)
    assert limit.limit >= 12  # the server took more: the ceiling is forgotten
    assert limit.ceiling is None
    assert limit.pushback_level == 11  # what the caller reports stays


def test_stray_pushbacks_do_not_hold_the_limit_down() -> None:
    # One 429 in 50 answers that the pool did not cause (another client of
    # the account): each cuts the limit, and clean answers win it back.
    limit = AdaptiveLimit(16, initial=16)
    pool = SaturatedPool(limit)

    seen = []
    for _ in range(60):
        pool.answer("clean", 49)
        pool.answer("pushback")
        seen.append(limit.limit)
    pool.answer("clean", 200)

    assert min(seen[30:]) >= 4
    assert limit.limit == 16  # all the way back once the 429s stop
    assert limit.ceiling is None


def test_a_pushback_below_the_remembered_level_adds_no_patience() -> None:
    limit = AdaptiveLimit(64, initial=10)
    tickets = [limit.acquire() for _ in range(10)]
    limit.release(tickets[-1], "pushback")  # refused at 10: remembered
    for ticket in tickets[:-1]:
        limit.release(ticket, "none")
    low = [limit.acquire() for _ in range(3)]
    limit.release(low[-1], "pushback")  # refused with only 3 in flight
    for ticket in low[:-1]:
        limit.release(ticket, "none")

    assert limit.ceiling == 3
    assert limit.limit == pytest.approx(2.1)
    pool = SaturatedPool(limit)
    pool.answer("clean", 40)
    assert limit.ceiling is None  # it grew past 3 within a few round trips
    assert limit.limit > 5


def test_the_limit_stays_between_one_and_the_maximum() -> None:
    limit = AdaptiveLimit(5, initial=8)
    assert limit.limit == 5
    pool = SaturatedPool(limit)
    pool.answer("clean", 20)
    pool.drain()
    assert limit.limit == 5

    for _ in range(10):
        ticket = limit.acquire()
        limit.release(ticket, "pushback")
    assert limit.limit == 1
    assert limit.at_floor


def test_an_unused_limit_does_not_grow() -> None:
    limit = AdaptiveLimit(64, initial=16)

    for _ in range(50):  # one request at a time: 15 slots stay idle
        limit.release(limit.acquire(), "clean")

    assert limit.limit == 16


def test_cancel_refuses_every_later_slot() -> None:
    limit = AdaptiveLimit(2, initial=2)
    limit.acquire()
    limit.cancel()

    with pytest.raises(Cancelled):
        limit.acquire()


def test_a_dead_server_stops_a_lenient_fill_instead_of_crawling() -> None:
    """Every fetch failing on the network is the server's failure, not each user's."""
    emu = Emulator(users=200, seed=3)
    emu.start()
    frame = conv_frames.load_users(emu.service_sid, **options(emu))
    settings = options(emu, max_attempts=2)
    emu.stop()  # the server dies before the fill

    waits = SleepRecorder()
    with pytest.raises(
        conv_frames.TransportError,
        match="8 user fetches in a row failed after all their retries",
    ):
        conv_frames.fill_presence(frame, errors="null", **{**settings, "sleep": waits})

    # Far fewer than 200 users x 2 attempts were tried before giving up.
    assert len(waits.waits) < 50


def test_a_server_answering_503_to_everything_stops_a_lenient_fill() -> None:
    """A 5xx that outlasts the retries counts as the server failing, like a reset."""
    always = FaultPlan(rate=1.0, kinds=["status_503"])
    waits = SleepRecorder()
    with Emulator(users=200, seed=3, faults=always) as emu:
        frame = listed(emu)
        with pytest.raises(conv_frames.TransportError) as caught:
            conv_frames.fill_presence(
                frame, errors="null", **options(emu, max_attempts=2, sleep=waits)
            )
        sent = len(emu.requests)

    assert str(caught.value).startswith(
        "8 user fetches in a row failed after all their retries, the last with: "
        "HTTP 503"
    )
    assert "errors='null' only skips a few users" in str(caught.value)
    assert isinstance(caught.value.__cause__, APIError)
    assert caught.value.__cause__.status == 503
    # Far fewer than 200 users x 2 attempts were sent before giving up.
    assert sent < 150


@pytest.mark.parametrize("frame", [None, [{"sid": "US1"}], pd.Series(["US1"])])
def test_something_that_is_not_a_frame_is_refused(frame: Any) -> None:
    with pytest.raises(ConfigurationError, match="needs a users DataFrame, not"):
        conv_frames.fill_presence(
            frame,
            account_sid="AC" + "0" * 32,
            auth_token="t",
            base_url="http://127.0.0.1:9",
        )
