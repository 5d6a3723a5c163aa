"""Every transient fault, alone and mixed, through the emulator's fault plans (#3).

Each test serves seeded users from the bundled emulator on 127.0.0.1, with a
plan that answers chosen requests badly, and loads them with a recorded
``sleep``. A load must return every user exactly once, having waited what it
should, or raise an error that says what happened. The same faults against a
scripted server, and the ``Retry-After`` parser's table, are in
test_retries.py; the 30-seed soak is in test_soak.py.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyarrow.parquet as pq
import pytest
import requests
from conftest import SleepRecorder
from emulated import (
    BODY_FAULTS,
    NETWORK_FAULTS,
    PAST_DATE,
    SERVER_FAULTS,
    STALL_SECONDS,
    TIMEOUT,
    VirtualClock,
    credentials,
    label,
    retry_after,
)
from pandas.testing import assert_frame_equal
from scripted import user_record, user_sid

import conv_frames
from conv_frames import APIError, RequestTimeout, SchemaError, TransportError
from conv_frames import _cli as cli
from conv_frames._cli import exit_code, main
from conv_frames.emulator import (
    Emulator,
    Fault,
    FaultPlan,
    LoggedRequest,
    make_users,
)
from conv_frames.emulator import _emulator as emulator_lifecycle
from conv_frames.emulator._replies import html_gateway_page, html_login_page

#: Three pages of at most 50 users.
USERS = 120
MAX_RETRY_WAIT = 5.0
BACKOFF_1 = (0.5, 1.0)  # 0.5 s, plus up to 0.5 s of jitter
BACKOFF_2 = (1.0, 1.5)
DOCS = "https://www.twilio.com/docs/errors/"

#: The errors a transient fault ends in once the attempts run out.
Retried = type[APIError] | type[TransportError]


def load(emulator: Emulator, sleep: Any, **options: Any) -> Any:
    options.setdefault("max_attempts", 3)
    options.setdefault("max_retry_wait", MAX_RETRY_WAIT)
    return conv_frames.load_users(
        emulator.service_sid, sleep=sleep, **credentials(emulator), **options
    )


def on_page_1(*faults: Fault, users: int = USERS) -> Emulator:
    """An emulator whose faults hit page 1 from its first request on."""
    return Emulator(users=users, faults=FaultPlan(at={1: list(faults)}))


def url_of(emulator: Emulator, entry: LoggedRequest) -> str:
    return f"{emulator.base_url}{entry.path}?{urlencode(entry.query)}"


def link_to_page_1(emulator: Emulator) -> str:
    """Page 1's URL as the emulator links it, asked for after the faults.

    A stalled request is logged only once its stall ends, so the request log
    cannot tell it yet.
    """
    answer = requests.get(
        f"{emulator.base_url}/v1/Services/{emulator.service_sid}/Users",
        params={"PageSize": "50"},
        auth=(emulator.account_sid, emulator.auth_token),
        timeout=10,
    )
    link: str = answer.json()["meta"]["next_page_url"]
    return link


def expected_frame(emulator: Emulator) -> Any:
    return conv_frames.users_frame(emulator.users())


# -- one fault, then the page ----------------------------------------------------


@pytest.mark.parametrize(
    "fault", [*SERVER_FAULTS, *NETWORK_FAULTS[:3], *BODY_FAULTS], ids=label
)
def test_a_fault_alone_costs_one_retry_and_loses_nothing(
    sleeps: SleepRecorder, fault: Fault
) -> None:
    with on_page_1(fault) as emu:
        frame = load(emu, sleeps)
        log = emu.requests

    assert_frame_equal(frame, expected_frame(emu))
    assert (frame.attrs["pages"], frame.attrs["requests"]) == (3, 4)
    assert frame.attrs["retries"] == 1
    assert [entry.fault for entry in log] == [None, fault.kind, None, None]
    assert log[1].query == log[2].query  # the same page again, token and all
    assert log[1].query["Page"] == "1"
    assert len(sleeps.waits) == 1
    assert BACKOFF_1[0] <= sleeps.waits[0] <= BACKOFF_1[1]
    assert emu.fault_counts == {fault.kind: 1}


def test_a_stall_costs_one_read_timeout_not_the_stall(sleeps: SleepRecorder) -> None:
    with on_page_1(Fault("stall", seconds=30)) as emu:
        started = time.perf_counter()
        frame = load(emu, sleeps, timeout=TIMEOUT)
        took = time.perf_counter() - started

    assert took < 3  # the stall lasts 30 s; a read waits 0.2 s
    assert_frame_equal(frame, expected_frame(emu))
    assert (frame.attrs["requests"], frame.attrs["retries"]) == (4, 1)
    assert BACKOFF_1[0] <= sleeps.waits[0] <= BACKOFF_1[1]


# -- Retry-After, as the emulator sends it ------------------------------------


@pytest.mark.parametrize(
    ("fault", "low", "high"),
    [
        pytest.param(Fault("status_429", retry_after=2), 2.0, 2.0, id="seconds"),
        pytest.param(retry_after("1.5"), 1.5, 1.5, id="fractional"),
        pytest.param(Fault("status_429", retry_after=0), 0.0, 0.0, id="zero"),
        pytest.param(
            Fault("status_429", retry_after=10**9), 5.0, 5.0, id="enormous-capped"
        ),
        pytest.param(
            Fault("status_429", retry_after_form="http_date", retry_after=3),
            1.5,
            3.0,
            id="date-in-3s",
        ),
        pytest.param(
            Fault("status_429", retry_after_form="http_date", retry_after=0),
            0.0,
            0.0,
            id="date-now",
        ),
        pytest.param(retry_after(PAST_DATE), 0.0, 0.0, id="date-past"),
        pytest.param(
            Fault("status_429", retry_after_form="http_date", retry_after=10**9),
            5.0,
            5.0,
            id="date-far-capped",
        ),
        pytest.param(
            Fault("status_429", retry_after_form="absent"), *BACKOFF_1, id="absent"
        ),
        pytest.param(retry_after("-5"), *BACKOFF_1, id="negative"),
        pytest.param(retry_after("soon"), *BACKOFF_1, id="words"),
        pytest.param(retry_after(""), *BACKOFF_1, id="empty"),
        pytest.param(retry_after("\xff\xfe"), *BACKOFF_1, id="not-text"),
        pytest.param(retry_after("inf"), *BACKOFF_1, id="infinite"),
    ],
)
def test_retry_after_is_honoured_capped_or_replaced_by_backoff(
    sleeps: SleepRecorder, fault: Fault, low: float, high: float
) -> None:
    with on_page_1(fault) as emu:
        frame = load(emu, sleeps)
        sent = emu.requests[1]

    assert (sent.status, sent.fault) == (429, "status_429")
    assert list(frame["sid"]) == [user["sid"] for user in emu.users()]
    assert frame.attrs["retries"] == 1
    assert len(sleeps.waits) == 1
    assert low <= sleeps.waits[0] <= high
    assert 0.0 <= sleeps.waits[0] <= MAX_RETRY_WAIT


# -- faults that outlast the attempts ----------------------------------------------


def twilio_words(status: int, url: str, code: int | None = None) -> str:
    code = code or 20000 + status
    reason = HTTPStatus(status).phrase
    return (
        f"HTTP {status} (Twilio error {code}) from {url} after 3 attempts: "
        f"{reason}; see {DOCS}{code}"
    )


def gateway_words(status: int, url: str) -> str:
    size = len(html_gateway_page(status, HTTPStatus(status).phrase).body.raw)
    return (
        f"HTTP {status} from {url} after 3 attempts: "
        f"{size} bytes of text/html; charset=utf-8"
    )


LOGIN_PAGE_SIZE = len(html_login_page().body.raw)

EXHAUSTED = [
    pytest.param(
        Fault("status_429", retry_after_form="absent"),
        APIError,
        lambda url: twilio_words(429, url, 20429),
        id="429",
    ),
    *(
        pytest.param(
            Fault(f"status_{status}"),
            APIError,
            functools.partial(twilio_words, status),
            id=f"{status}-json",
        )
        for status in (500, 502, 503, 504)
    ),
    *(
        pytest.param(
            Fault(kind, html=html),
            APIError,
            functools.partial(gateway_words, status),
            id=f"{status}-html",
        )
        for kind, html, status in (
            ("status_500", True, 500),
            ("html_502", False, 502),
            ("html_503", False, 503),
            ("html_504", False, 504),
        )
    ),
    pytest.param(
        Fault("reset_before_body"),
        TransportError,
        lambda url: (
            f"request failed on the network (ConnectionError) ({url}) after 3 attempts"
        ),
        id="reset-before-body",
    ),
    *(
        pytest.param(
            Fault(kind),
            TransportError,
            lambda url: (
                "request failed on the network (ChunkedEncodingError) "
                f"({url}) after 3 attempts"
            ),
            id=kind,
        )
        for kind in ("reset_mid_body", "short_body")
    ),
    pytest.param(
        Fault("stall", seconds=STALL_SECONDS),
        RequestTimeout,
        lambda url: (
            f"request timed out waiting for the server ({url}) after 3 attempts"
        ),
        id="stall",
    ),
    pytest.param(
        Fault("html_200"),
        TransportError,
        lambda url: (
            f"HTTP 200 answer is not JSON ({LOGIN_PAGE_SIZE} bytes of "
            f"text/html; charset=utf-8) ({url}) after 3 attempts"
        ),
        id="html-200",
    ),
    pytest.param(
        Fault("empty_200"),
        TransportError,
        lambda url: (
            f"HTTP 200 answer has an empty body, not JSON ({url}) after 3 attempts"
        ),
        id="empty-200",
    ),
]


@pytest.mark.parametrize(("fault", "error", "words"), EXHAUSTED)
def test_a_fault_that_outlasts_the_attempts_is_a_clear_error(
    sleeps: SleepRecorder, fault: Fault, error: Retried, words: Any
) -> None:
    with on_page_1(fault, fault, fault) as emu:
        with pytest.raises(error) as caught:
            load(emu, sleeps, timeout=TIMEOUT)
        page_1 = link_to_page_1(emu)

    assert type(caught.value) is error
    assert isinstance(caught.value, APIError | TransportError)
    assert str(caught.value) == words(page_1)
    assert caught.value.attempts == 3
    assert len(sleeps.waits) == 2
    assert BACKOFF_1[0] <= sleeps.waits[0] <= BACKOFF_1[1]
    assert BACKOFF_2[0] <= sleeps.waits[1] <= BACKOFF_2[1]
    assert exit_code(caught.value) == 4


# -- faults mixed -------------------------------------------------------------------

MIXED = (
    Fault("status_503"),
    Fault("reset_mid_body"),
    Fault("status_429", retry_after=3),
    Fault("html_200"),
    Fault("short_body"),
)


def test_mixed_faults_on_one_page_back_off_exponentially_then_load(
    sleeps: SleepRecorder,
) -> None:
    with on_page_1(*MIXED) as emu:
        frame = load(emu, sleeps, max_attempts=6)

    assert_frame_equal(frame, expected_frame(emu))
    assert (frame.attrs["requests"], frame.attrs["retries"]) == (8, 5)
    # The 429 asked for 3 s; the 5th backoff (8 s) is capped by max_retry_wait.
    expected = [BACKOFF_1, BACKOFF_2, (3.0, 3.0), (4.0, 4.5), (5.0, 5.0)]
    assert len(sleeps.waits) == len(expected)
    for wait, (low, high) in zip(sleeps.waits, expected, strict=True):
        assert low <= wait <= high


def test_mixed_faults_outlasting_the_attempts_raise_the_last_fault(
    sleeps: SleepRecorder,
) -> None:
    with on_page_1(*MIXED) as emu:
        with pytest.raises(TransportError) as caught:
            load(emu, sleeps, max_attempts=5)
        log = emu.requests

    assert str(caught.value).startswith(
        "request failed on the network (ChunkedEncodingError) "
    )
    assert caught.value.attempts == 5
    assert [entry.fault for entry in log] == [None] + [f.kind for f in MIXED]
    assert len(sleeps.waits) == 4


def test_mixed_faults_over_several_pages_each_page_arrives_once(
    sleeps: SleepRecorder,
) -> None:
    plan = FaultPlan(
        at={
            0: Fault("status_500", html=True),
            2: [Fault("reset_before_body"), retry_after("0.5")],
            6: Fault("empty_200"),
            8: [Fault("short_body"), Fault("status_502"), Fault("html_200")],
        }
    )
    with Emulator(users=300, faults=plan) as emu:
        frame = load(emu, sleeps, max_attempts=4)
        log = emu.requests

    assert_frame_equal(frame, expected_frame(emu))
    assert [(entry.query.get("Page", "0"), entry.fault) for entry in log] == [
        ("0", "status_500"),
        ("0", None),
        ("1", "reset_before_body"),
        ("1", "status_429"),
        ("1", None),
        ("2", None),
        ("3", "empty_200"),
        ("3", None),
        ("4", "short_body"),
        ("4", "status_502"),
        ("4", "html_200"),
        ("4", None),
        ("5", None),
    ]
    assert (frame.attrs["pages"], frame.attrs["retries"]) == (6, 7)
    assert sleeps.waits[2] == 0.5


# -- budgets and the account's rate limit ------------------------------------


def test_the_total_wait_budget_ends_retrying_before_the_attempts_do(
    sleeps: SleepRecorder,
) -> None:
    with on_page_1(*[Fault("status_429", retry_after=4)] * 6) as emu:
        with pytest.raises(APIError) as caught:
            load(emu, sleeps, max_attempts=6, max_total_wait=10.0)
        requests = len(emu.requests)

    # 4 s + 4 s fit in 10 s; a third wait would not, so the third 429 is final.
    assert sleeps.waits == [4.0, 4.0]
    assert (caught.value.status, caught.value.attempts) == (429, 3)
    assert requests == 4


def test_the_accounts_rate_limit_is_waited_out_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = VirtualClock()
    clock.install(monkeypatch)
    with Emulator(users=500, rate_limit=3) as emu:
        frame = load(emu, clock.sleep)
        log = emu.requests

    assert_frame_equal(frame, expected_frame(emu))
    # A burst of 3, a 429 asking for 1 s, and after it 3 more, and so on.
    assert [entry.status for entry in log] == [200, 200, 200, 429] * 3 + [200]
    assert {entry.fault for entry in log} == {None}
    assert clock.waits == [1.0, 1.0, 1.0]
    assert (frame.attrs["pages"], frame.attrs["requests"]) == (10, 13)
    assert frame.attrs["retries"] == 3


def test_a_rate_limit_that_never_lifts_ends_in_twilios_429(
    monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder
) -> None:
    VirtualClock().install(monkeypatch)  # and nothing moves it
    with Emulator(users=USERS, rate_limit=1) as emu:
        with pytest.raises(APIError) as caught:
            load(emu, sleeps, max_attempts=4)
        page_1 = url_of(emu, emu.requests[1])

    assert str(caught.value) == (
        f"HTTP 429 (Twilio error 20429) from {page_1} after 4 attempts: "
        f"Too Many Requests; see {DOCS}20429"
    )
    assert sleeps.waits == [1.0, 1.0, 1.0]


# -- exports ---------------------------------------------------------------------

#: 50 pages of 50 users: a first, clean export is requests 0 to 49, so the
#: second export asks for its 40th page (Page=39) in request 50 + 39.
EXPORT_USERS = 2500
PAGE_40_OF_SECOND_EXPORT = 89


@pytest.mark.parametrize(
    ("function", "fault", "error"),
    [
        ("export_users", Fault("status_503"), APIError),
        ("load_users", Fault("reset_mid_body"), TransportError),
        ("export_users", Fault("html_200"), TransportError),
    ],
    ids=["export-503", "load-reset-mid-body", "export-html-200"],
)
def test_a_load_failing_on_page_40_keeps_the_earlier_file_byte_identical(
    tmp_path: Path,
    sleeps: SleepRecorder,
    function: str,
    fault: Fault,
    error: Retried,
) -> None:
    plan = FaultPlan(at={PAGE_40_OF_SECOND_EXPORT: [fault] * 8})  # keeps failing
    path = tmp_path / "users.parquet"
    with Emulator(users=EXPORT_USERS, faults=plan) as emu:
        options = {**credentials(emu), "sleep": sleeps, "max_attempts": 4}
        conv_frames.export_users(emu.service_sid, path, **options)
        before = path.read_bytes()
        again: Callable[..., object] = functools.partial(
            getattr(conv_frames, function), parquet_path=path
        )
        with pytest.raises(error) as caught:
            again(emu.service_sid, **options)
        second = emu.requests[50:]

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]
    assert pq.ParquetFile(path).metadata.num_rows == EXPORT_USERS
    assert isinstance(caught.value, APIError | TransportError)
    assert caught.value.attempts == 4
    assert [entry.query.get("Page", "0") for entry in second] == [
        *(str(page) for page in range(40)),
        "39",
        "39",
        "39",
    ]
    assert [entry.fault for entry in second[39:]] == [fault.kind] * 4


# -- the command line under faults ---------------------------------------------


@pytest.fixture
def cli_sleeps(monkeypatch: pytest.MonkeyPatch, sleeps: SleepRecorder) -> SleepRecorder:
    """Make ``conv-frames export`` wait on the recorder instead of the clock."""
    recorded = functools.partial(conv_frames.export_users, sleep=sleeps)
    monkeypatch.setattr(cli, "export_users", recorded)
    return sleeps


def sign_in(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)


def export(emulator: Emulator, output: Path, *extra: str) -> int:
    return main(
        [
            "export",
            emulator.service_sid,
            "--output",
            str(output),
            "--base-url",
            emulator.base_url,
            "--max-attempts",
            "3",
            *extra,
        ]
    )


def one_line_failure(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("conv-frames:")]
    assert len(lines) == 1
    return lines[0]


def test_export_through_random_faults_exits_0_with_one_summary_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
) -> None:
    kinds = [*SERVER_FAULTS, *NETWORK_FAULTS[:3], *BODY_FAULTS, retry_after("1")]
    output = tmp_path / "users.parquet"
    with Emulator(users=500, faults=FaultPlan(rate=0.3, seed=6, kinds=kinds)) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, output, "--max-attempts", "8")
        injected = sum(emu.fault_counts.values())

    out, err = capsys.readouterr()
    assert code == 0
    head, seconds = out.removesuffix(" s\n").rsplit(", ", 1)
    assert head == (
        f"exported 500 users of {emu.service_sid} to {output}: "
        f"10 pages, {injected} retries"
    )
    assert float(seconds) >= 0
    assert injected == len(cli_sleeps.waits) == 6  # what seed 6 draws
    assert "Traceback" not in err
    assert_frame_equal(conv_frames.read_parquet(output), expected_frame(emu))


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        pytest.param(
            Fault("status_503"),
            lambda url: f"APIError: {twilio_words(503, url)}",
            id="503",
        ),
        pytest.param(
            Fault("html_504"),
            lambda url: f"APIError: {gateway_words(504, url)}",
            id="504-html",
        ),
        pytest.param(
            Fault("status_429", retry_after_form="http_date", retry_after=2),
            lambda url: f"APIError: {twilio_words(429, url, 20429)}",
            id="429",
        ),
        pytest.param(
            Fault("reset_before_body"),
            lambda url: (
                "TransportError: request failed on the network "
                f"(ConnectionError) ({url}) after 3 attempts"
            ),
            id="reset",
        ),
        pytest.param(
            Fault("short_body"),
            lambda url: (
                "TransportError: request failed on the network "
                f"(ChunkedEncodingError) ({url}) after 3 attempts"
            ),
            id="short-body",
        ),
        pytest.param(
            Fault("stall", seconds=STALL_SECONDS),
            lambda url: (
                "RequestTimeout: request timed out waiting for the "
                f"server ({url}) after 3 attempts"
            ),
            id="stall",
        ),
        pytest.param(
            Fault("empty_200"),
            lambda url: (
                "TransportError: HTTP 200 answer has an empty body, not "
                f"JSON ({url}) after 3 attempts"
            ),
            id="empty-200",
        ),
    ],
)
def test_faults_outlasting_the_attempts_exit_4_and_keep_the_earlier_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
    fault: Fault,
    words: Any,
) -> None:
    output = tmp_path / "users.parquet"
    output.write_bytes(b"yesterday's export")
    with on_page_1(fault, fault, fault) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, output, "--timeout", "0.2")
        page_1 = link_to_page_1(emu)

    assert code == 4
    assert one_line_failure(capsys) == f"conv-frames: {words(page_1)}"
    assert len(cli_sleeps.waits) == 2
    assert output.read_bytes() == b"yesterday's export"
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


def test_a_rate_limit_outlasting_the_attempts_exits_4(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
) -> None:
    VirtualClock().install(monkeypatch)
    with Emulator(users=USERS, rate_limit=1) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, tmp_path / "users.parquet")
        page_1 = url_of(emu, emu.requests[1])

    assert code == 4
    assert one_line_failure(capsys) == (
        f"conv-frames: APIError: {twilio_words(429, page_1, 20429)}"
    )
    assert cli_sleeps.waits == [1.0, 1.0]
    assert list(tmp_path.iterdir()) == []


def test_the_api_refusing_exits_3_after_one_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
) -> None:
    unknown = "IS" + "0" * 32
    with Emulator(users=USERS) as emu:
        sign_in(monkeypatch, emu)
        code = main(
            [
                "export",
                unknown,
                "--output",
                str(tmp_path / "users.parquet"),
                "--base-url",
                emu.base_url,
            ]
        )
        sent = len(emu.requests)
        not_found = one_line_failure(capsys)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "0" * 32)
        wrong_token = export(emu, tmp_path / "users.parquet")
        refused = one_line_failure(capsys)
        sent_then = len(emu.requests)

    assert (code, wrong_token) == (3, 3)
    assert (sent, sent_then) == (1, 2)
    path = f"/v1/Services/{unknown}/Users"
    assert not_found == (
        f"conv-frames: APIError: HTTP 404 (Twilio error 20404) from "
        f"{emu.base_url}{path}?PageSize=50: The requested resource {path} was "
        f"not found; see {DOCS}20404"
    )
    assert refused == (
        f"conv-frames: APIError: HTTP 401 (Twilio error 20003) from "
        f"{emu.base_url}/v1/Services/{emu.service_sid}/Users?PageSize=50: "
        f"Authenticate; see {DOCS}20003"
    )
    assert cli_sleeps.waits == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "environment", "words"),
    [
        (
            ["--page-size", "0"],
            {},
            "--page-size 0 is out of range; use an integer from 1 to 1000",
        ),
        (
            [],
            {"TWILIO_ACCOUNT_SID": "{token}", "TWILIO_AUTH_TOKEN": "{account}"},
            "account_sid (a 32-character value not starting with 'AC', not shown) "
            "is not an account SID; it must match ^AC[0-9a-fA-F]{32}$",
        ),
    ],
    ids=["bad-page-size", "swapped-credentials"],
)
def test_configuration_errors_exit_2_before_any_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environment: dict[str, str],
    words: str,
) -> None:
    with Emulator(users=USERS) as emu:
        sign_in(monkeypatch, emu)
        for name, value in environment.items():
            filled = value.format(token=emu.auth_token, account=emu.account_sid)
            monkeypatch.setenv(name, filled)
        code = export(emu, tmp_path / "users.parquet", *argv)
        requests = emu.requests

    assert code == 2
    line = one_line_failure(capsys)
    assert line.startswith(f"conv-frames: ConfigurationError: {words}")
    assert emu.auth_token not in line
    assert requests == []


def test_a_record_breaking_the_contract_exits_5(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
) -> None:
    """The emulator serves one user (on page 3) with a date that is not one."""

    def with_a_broken_record(count: int, **options: Any) -> list[dict[str, Any]]:
        users = make_users(count, **options)
        users[110]["date_created"] = "yesterday"
        return users

    monkeypatch.setattr(emulator_lifecycle, "make_users", with_a_broken_record)
    output = tmp_path / "users.parquet"
    output.write_bytes(b"yesterday's export")
    with Emulator(users=USERS) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, output)
        broken = emu.users()[110]["sid"]

    assert code == 5
    assert one_line_failure(capsys) == (
        f"conv-frames: SchemaError: field 'date_created' of user {broken} is "
        "'yesterday', expected an ISO 8601 date-time"
    )
    assert cli_sleeps.waits == []
    assert output.read_bytes() == b"yesterday's export"
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


def test_an_unwritable_folder_exits_7_and_keeps_the_earlier_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_sleeps: SleepRecorder,
) -> None:
    """Simulated: the tests may run as root, whom a read-only folder won't stop."""
    output = tmp_path / "users.parquet"
    output.write_bytes(b"yesterday's export")

    def refuse(where: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(where))

    monkeypatch.setattr(pq, "ParquetWriter", refuse)
    with Emulator(users=USERS) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, output)

    assert code == 7
    assert one_line_failure(capsys) == (
        f"conv-frames: ExportError: could not write {output}: Permission denied; "
        "check that the folder exists, is writable and has space (any earlier "
        "file there is untouched)"
    )
    assert output.read_bytes() == b"yesterday's export"
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


def test_debug_adds_the_traceback_of_a_transient_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli_sleeps: SleepRecorder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with on_page_1(*[Fault("html_503")] * 3) as emu:
        sign_in(monkeypatch, emu)
        code = export(emu, tmp_path / "users.parquet", "--debug")

    assert code == 4
    err = capsys.readouterr().err
    assert re.search(r"APIError: HTTP 503 from .* after 3 attempts: ", err)
    assert "Traceback (most recent call last)" in err


# -- the emulator command's --faults ------------------------------------------


def test_the_emulator_command_serves_the_plan_given_with_faults(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sleeps: SleepRecorder,
) -> None:
    served: dict[str, Any] = {}

    def load_instead_of_serving(emulator: Emulator) -> None:
        served["frame"] = load(emulator, sleeps, max_attempts=4)
        served["log"] = emulator.requests
        served["users"] = emulator.users()

    monkeypatch.setattr(Emulator, "serve_forever", load_instead_of_serving)
    plan = (
        "1=status_503+reset_mid_body,"
        "3=status_429:retry_after_form=text:retry_after_text=1.5"
    )
    code = main(["emulator", "--port", "0", "--users", "120", "--faults", plan])

    assert code == 0
    assert capsys.readouterr().out.startswith(
        "Twilio Conversations emulator on http://127.0.0.1:"
    )
    assert [entry.fault for entry in served["log"]] == [
        None,
        "status_503",
        "reset_mid_body",
        "status_429",
        None,
        None,
    ]
    assert list(served["frame"]["sid"]) == [user["sid"] for user in served["users"]]
    assert len(sleeps.waits) == 3
    assert sleeps.waits[2] == 1.5


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["--faults", "0=teapot"],
            "fault plan item '0=teapot': unknown fault kind 'teapot'; valid kinds "
            "are status_429, ",
        ),
        (["--faults", "rate=2"], "rate must be between 0 and 1, got 2.0"),
        (["--users", "-1"], "users needs one count of 0 or more per service"),
    ],
    ids=["unknown-kind", "rate", "users"],
)
def test_a_bad_emulator_setting_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main(["emulator", "--port", "0", *argv]) == 2

    assert one_line_failure(capsys).startswith(
        f"conv-frames: ConfigurationError: {words}"
    )


# -- the emulator's Retry-After text -------------------------------------------


def test_a_retry_after_text_is_parsed_from_a_plan_and_sent_as_it_is() -> None:
    plan = FaultPlan.parse("0=status_429:retry_after_form=text:retry_after_text=-5")

    assert plan.schedule == {0: retry_after("-5")}
    with Emulator(users=3, faults=plan) as emu:
        answer = requests.get(
            f"{emu.base_url}/v1/Services/{emu.service_sid}/Users",
            auth=(emu.account_sid, emu.auth_token),
            timeout=10,
        )

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "-5"
    assert answer.json()["code"] == 20429


@pytest.mark.parametrize("text", ["1\r\nSet-Cookie: x=1", "1\n", "\u2603"])
def test_a_retry_after_text_must_be_one_latin_1_header_line(text: str) -> None:
    with pytest.raises(ValueError, match="retry_after_text must be one header line"):
        retry_after(text)


# -- records: the wrong-type fields test_frame.py does not list -----------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("account_sid", 42, "42"),
        ("account_sid", True, "True"),
        ("chat_service_sid", {"sid": "IS1"}, "{'sid': 'IS1'}"),
        ("chat_service_sid", ["IS1"], "['IS1']"),
        ("date_updated", 1585082301, "1585082301"),
    ],
)
def test_a_wrong_type_in_the_remaining_fields_names_field_user_and_value(
    field: str, value: Any, shown: str
) -> None:
    records = [user_record(2), user_record(1, **{field: value})]

    with pytest.raises(SchemaError) as caught:
        conv_frames.users_frame(records)

    assert str(caught.value) == (
        f"field {field!r} of user {user_sid(1)} is {shown}, expected a string or null"
    )
