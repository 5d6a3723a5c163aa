"""Retries: what is retried, how long it waits, and the error at the end."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import tenacity
from conftest import SleepRecorder
from scripted import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_SID,
    USERS_PATH,
    ScriptedServer,
    Step,
    twilio_error,
    user_record,
    users_page,
)

import conv_frames
from conv_frames import APIError, RequestTimeout, SchemaError, TransportError
from conv_frames._config import Credentials
from conv_frames._transport import (
    LoadStats,
    RetryEvent,
    RetryPolicy,
    Transport,
    parse_retry_after,
)

GATEWAY_PAGE = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n"
    "<body><center><h1>504 Gateway Time-out</h1></center></body>\r\n</html>\r\n"
)
LOGIN_PAGE = (
    "<!DOCTYPE html><html><body><form>Proxy login required</form></body></html>"
)
ONE_USER = users_page([user_record(1)])


def load(server: ScriptedServer, sleeps: SleepRecorder, **options: Any) -> Any:
    options.setdefault("max_attempts", 3)
    options.setdefault("timeout", 2.0)
    return conv_frames.load_users(
        SERVICE_SID,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        base_url=server.base_url,
        page_size=2,
        sleep=sleeps,
        **options,
    )


def too_many(retry_after: str | None = "2") -> Step:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Step(
        429, json=twilio_error(429, 20429, "Too Many Requests"), headers=headers
    )


def test_503_503_200_makes_three_requests_and_loads_the_rows(
    sleeps: SleepRecorder,
) -> None:
    unavailable = Step(503, json=twilio_error(503, 20503, "Service is unavailable"))
    with ScriptedServer([unavailable, unavailable, Step(json=ONE_USER)]) as server:
        frame = load(server, sleeps)

    assert list(frame["sid"]) == [f"US{1:032d}"]
    assert len(server.requests) == 3
    assert len({r.target for r in server.requests}) == 1
    assert frame.attrs["retries"] == 2
    assert frame.attrs["requests"] == 3
    # Exponential backoff with up to 0.5 s of jitter: 0.5 s, then 1 s.
    assert 0.5 <= sleeps.waits[0] <= 1.0
    assert 1.0 <= sleeps.waits[1] <= 1.5


def test_429_waits_what_retry_after_says(sleeps: SleepRecorder) -> None:
    """BUG-05: 20429 is retried after the server's Retry-After, not fatal."""
    with ScriptedServer([too_many("2"), Step(json=ONE_USER)]) as server:
        frame = load(server, sleeps)

    assert sleeps.waits == [2.0]
    assert len(frame) == 1
    assert server.requests[0].target == server.requests[1].target


def test_429_without_retry_after_falls_back_to_backoff(sleeps: SleepRecorder) -> None:
    with ScriptedServer([too_many(None), Step(json=ONE_USER)]) as server:
        load(server, sleeps)

    assert len(sleeps.waits) == 1
    assert 0.5 <= sleeps.waits[0] <= 1.0


def test_429_exhausted_raises_the_api_error_not_retry_error(
    sleeps: SleepRecorder,
) -> None:
    with ScriptedServer([too_many("1")] * 3) as server:
        with pytest.raises(APIError) as caught:
            load(server, sleeps)

    error = caught.value
    assert not isinstance(error, tenacity.RetryError)
    assert (error.status, error.code, error.attempts) == (429, 20429, 3)
    assert error.message == "Too Many Requests"
    assert error.more_info == "https://www.twilio.com/docs/errors/20429"
    assert sleeps.waits == [1.0, 1.0]
    assert str(error) == (
        f"HTTP 429 (Twilio error 20429) from {server.base_url}{USERS_PATH}?PageSize=2"
        " after 3 attempts: Too Many Requests; "
        "see https://www.twilio.com/docs/errors/20429"
    )


def test_retry_after_is_capped_by_max_retry_wait(sleeps: SleepRecorder) -> None:
    with ScriptedServer([too_many("86400"), Step(json=ONE_USER)]) as server:
        load(server, sleeps, max_retry_wait=5.0)

    assert sleeps.waits == [5.0]


def test_total_wait_budget_stops_retrying_early(sleeps: SleepRecorder) -> None:
    with ScriptedServer([too_many("4")] * 5) as server:
        with pytest.raises(APIError) as caught:
            load(server, sleeps, max_attempts=5, max_total_wait=10.0)

    # 4 s + 4 s fit in 10 s; a third wait would not, so the third answer is final.
    assert sleeps.waits == [4.0, 4.0]
    assert caught.value.attempts == 3
    assert len(server.requests) == 3


def test_html_gateway_error_is_retried_as_a_5xx(sleeps: SleepRecorder) -> None:
    """BUG-06: the HTML body of a 504 is not parsed as JSON."""
    gateway = Step(504, body=GATEWAY_PAGE, headers={"Content-Type": "text/html"})
    with ScriptedServer([gateway, Step(json=ONE_USER)]) as server:
        frame = load(server, sleeps)

    assert len(frame) == 1
    assert len(server.requests) == 2


def test_html_gateway_error_exhausted_names_the_status(sleeps: SleepRecorder) -> None:
    gateway = Step(504, body=GATEWAY_PAGE, headers={"Content-Type": "text/html"})
    with ScriptedServer([gateway] * 3) as server:
        with pytest.raises(APIError, match=r"HTTP 504 .*: 128 bytes of text/html$"):
            load(server, sleeps)

    assert len(server.requests) == 3


def test_a_later_page_failing_fails_the_load_and_writes_no_file(
    sleeps: SleepRecorder, tmp_path: Any
) -> None:
    """BUG-07: no partial frame, no partial file, no secret in the message."""
    link = f"{{BASE}}{USERS_PATH}?PageSize=2&Page=1&PageToken=PT0a0a0a0a0a0a0a0a"
    first = Step(json=users_page([user_record(1), user_record(2)], next_page_url=link))
    failing = Step(500, json=twilio_error(500, 20500, "An internal server error"))
    export = tmp_path / "users.parquet"
    with ScriptedServer([first, failing, failing, failing]) as server:
        with pytest.raises(APIError) as caught:
            load(server, sleeps, parquet_path=export)

    assert len(server.requests) == 4
    assert caught.value.status == 500
    text = str(caught.value) + repr(caught.value)
    assert "20500" in text
    assert "PageToken=PT0a0a0a0a0a0a0a0a" in text
    assert AUTH_TOKEN not in text
    assert "QUNhMWExYTFh" not in text  # the start of the base64 Authorization value
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_cut_short_is_retried(sleeps: SleepRecorder, chunked: bool) -> None:
    """BUG-08: the connection drops mid-body; the page is fetched again."""
    cut = Step(json=ONE_USER, truncate_after=40, chunked=chunked)
    with ScriptedServer([cut, Step(json=ONE_USER)]) as server:
        frame = load(server, sleeps)

    assert list(frame["sid"]) == [f"US{1:032d}"]
    assert len(server.requests) == 2


def test_a_reset_connection_is_retried(sleeps: SleepRecorder) -> None:
    with ScriptedServer([Step(reset=True), Step(json=ONE_USER)]) as server:
        frame = load(server, sleeps)

    assert len(frame) == 1
    assert len(server.requests) == 2


def test_a_stalled_server_times_out_instead_of_hanging(sleeps: SleepRecorder) -> None:
    """BUG-09: a read timeout per request, retried, then a timeout error."""
    stall = Step(json=ONE_USER, delay_s=5)
    started = time.monotonic()
    with ScriptedServer([stall, stall]) as server:
        with pytest.raises(RequestTimeout, match="timed out") as caught:
            load(server, sleeps, max_attempts=2, timeout=0.3)

    assert time.monotonic() - started < 4
    assert caught.value.attempts == 2
    assert isinstance(caught.value, TransportError)
    assert isinstance(caught.value, TimeoutError)


def test_a_stall_then_an_answer_recovers(sleeps: SleepRecorder) -> None:
    with ScriptedServer(
        [Step(json=ONE_USER, delay_s=5), Step(json=ONE_USER)]
    ) as server:
        frame = load(server, sleeps, max_attempts=2, timeout=0.3)

    assert len(frame) == 1


def test_default_timeout_is_set() -> None:
    assert conv_frames.DEFAULT_TIMEOUT == (10.0, 30.0)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (401, 20003, "Authenticate"),
        (404, 20404, f"The requested resource {USERS_PATH} was not found"),
        (400, 20001, "Invalid PageSize"),
        (403, 20403, "Forbidden"),
    ],
)
def test_client_errors_are_not_retried(
    sleeps: SleepRecorder, status: int, code: int, message: str
) -> None:
    """BUG-10: a 4xx other than 429 fails after one request, with Twilio's words."""
    with ScriptedServer([Step(status, json=twilio_error(status, code, message))]) as s:
        with pytest.raises(APIError) as caught:
            load(s, sleeps)

    assert len(s.requests) == 1
    assert sleeps.waits == []
    error = caught.value
    assert (error.status, error.code, error.message) == (status, code, message)
    assert error.url == f"{s.base_url}{USERS_PATH}?PageSize=2"
    assert error.attempts == 1
    assert AUTH_TOKEN not in str(error) + repr(error)


def test_503_exhausted_keeps_status_as_attribute(sleeps: SleepRecorder) -> None:
    """BUG-11: the last HTTP error surfaces, not tenacity.RetryError."""
    unavailable = Step(503, json=twilio_error(503, 20503, "Service is unavailable"))
    with ScriptedServer([unavailable] * 3) as server:
        with pytest.raises(APIError, match="20503") as caught:
            load(server, sleeps)

    assert caught.value.status == 503
    assert caught.value.attempts == 3
    assert isinstance(caught.value.__context__, APIError | type(None))


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            LOGIN_PAGE,
            "text/html; charset=utf-8",
            "HTTP 200 answer is not JSON .*text/html",
        ),
        ("", "application/json", "HTTP 200 answer has an empty body"),
    ],
    ids=["html-login-page", "empty-body"],
)
def test_a_200_that_is_not_json_is_retried_then_fails(
    sleeps: SleepRecorder, body: str, content_type: str, message: str
) -> None:
    """BUG-29: a proxy's login page or an empty body is never an empty result."""
    step = Step(body=body, headers={"Content-Type": content_type})
    with ScriptedServer([step] * 3) as server:
        with pytest.raises(TransportError, match=message) as caught:
            load(server, sleeps)

    assert len(server.requests) == 3
    assert caught.value.attempts == 3


def test_json_nested_too_deep_is_a_schema_error_without_retry(
    sleeps: SleepRecorder,
) -> None:
    """BUG-28 (deep links): 5000 levels; one request, no RecursionError."""
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    text = json.dumps(users_page([user_record(1)]))
    step = Step(body=text.replace('"links": {', '"links": {"deep": ' + deep + ", ", 1))
    with ScriptedServer([step]) as server:
        with pytest.raises(SchemaError, match="deeper than can be decoded"):
            load(server, sleeps)

    assert len(server.requests) == 1


NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("86400000", 86400000.0),
        (format_datetime(NOW + timedelta(seconds=3), usegmt=True), 3.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("Fri, 04 Dec 2026 12:00:05 GMT", 5.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("inf", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize("header", ["-5", "soon", "inf"])
def test_unusable_retry_after_falls_back_to_backoff(
    sleeps: SleepRecorder, header: str
) -> None:
    with ScriptedServer([too_many(header), Step(json=ONE_USER)]) as server:
        load(server, sleeps)

    assert 0.5 <= sleeps.waits[0] <= 1.0


def test_each_retry_logs_one_warning_without_secrets(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="conv_frames")
    with ScriptedServer([too_many("1"), Step(json=ONE_USER)]) as server:
        load(server, sleeps)

    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        "retrying after HTTP 429 (attempt 1 of 3, waiting 1.00 s): "
        f"{server.base_url}{USERS_PATH}?PageSize=2"
    ]
    assert AUTH_TOKEN not in caplog.text


def test_the_retry_hook_hears_why_and_how_long(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    unavailable = Step(503, json=twilio_error(503, 20503, "Service is unavailable"))
    steps = [unavailable, too_many("90"), Step(json=ONE_USER)]
    events: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=3, max_retry_wait=5.0, backoff_jitter=0.0)
    with ScriptedServer(steps) as server:
        transport = Transport(
            Credentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN),
            timeout=2.0,
            retry=policy,
            sleep=sleeps,
            on_retry=events.append,
        )
        url = f"{server.base_url}{USERS_PATH}?PageSize=2"
        with caplog.at_level("DEBUG", logger="conv_frames"):
            page = transport.get_json(url, LoadStats())
        transport.close()

    assert page["users"] == ONE_USER["users"]
    assert events == [
        RetryEvent(url, "HTTP 503", 503, attempt=1, max_attempts=3, wait=0.5),
        RetryEvent(url, "HTTP 429", 429, attempt=2, max_attempts=3, wait=5.0),
    ]
    assert [event.pushback for event in events] == [False, True]
    assert sleeps.waits == [0.5, 5.0]  # what the hook was told is what was slept
    assert [r for r in caplog.records if r.levelno >= 30] == []  # the hook reports


def test_by_default_each_retry_logs_one_warning_with_the_wait_slept(
    sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    with ScriptedServer([too_many("90"), Step(json=ONE_USER)]) as server:
        with caplog.at_level("WARNING", logger="conv_frames"):
            load(server, sleeps, max_retry_wait=5)

    assert sleeps.waits == [5.0]
    assert [r.getMessage() for r in caplog.records] == [
        f"retrying after HTTP 429 (attempt 1 of 3, waiting 5.00 s): "
        f"{server.base_url}{USERS_PATH}?PageSize=2"
    ]
