"""Tests of the Conversations v1 emulator, through real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.response.exceptions import InvalidData
from werkzeug.datastructures import Headers, ImmutableMultiDict

import conv_frames.emulator as emulator_module
from conv_frames.emulator import FAULT_KINDS, Emulator, Fault, FaultPlan, make_users

SPEC_PATH = (
    Path(__file__).parents[2] / "shared" / "spec" / "twilio_conversations_v1.json"
)
TWILIO_HOST = "https://conversations.twilio.com"

SID = re.compile(r"^(US|AC|IS|RL)[0-9a-f]{32}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

AUTHENTICATE = {
    "code": 20003,
    "message": "Authenticate",
    "more_info": "https://www.twilio.com/docs/errors/20003",
    "status": 401,
}
TOO_MANY_REQUESTS = {
    "code": 20429,
    "message": "Too Many Requests",
    "more_info": "https://www.twilio.com/docs/errors/20429",
    "status": 429,
}


# -- helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """One shared emulator for tests that only read."""
    with Emulator(users=1234, seed=0) as running:
        yield running


@pytest.fixture
def session(emu: Emulator) -> Iterator[requests.Session]:
    """A keep-alive session that signs in with the account SID and token."""
    with requests.Session() as opened:
        opened.auth = (emu.account_sid, emu.auth_token)
        yield opened


def users_path(emu: Emulator, service_sid: str | None = None) -> str:
    return f"/v1/Services/{service_sid or emu.service_sid}/Users"


def authorization(emu: Emulator) -> str:
    pair = f"{emu.account_sid}:{emu.auth_token}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def fetch(emu: Emulator, path: str, **kwargs: Any) -> requests.Response:
    """GET ``path`` (or an absolute URL) with the account's credentials."""
    url = path if path.startswith("http") else emu.base_url + path
    kwargs.setdefault("auth", (emu.account_sid, emu.auth_token))
    return requests.get(url, timeout=10, **kwargs)


def raw_get(
    emu: Emulator, path: str, headers: Mapping[str, str] | None = None
) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """Send one GET with http.client and return the unread response."""
    parts = urlsplit(emu.base_url)
    connection = http.client.HTTPConnection(
        parts.hostname or "", parts.port, timeout=10
    )
    connection.request(
        "GET", path, headers={"Authorization": authorization(emu), **(headers or {})}
    )
    return connection.getresponse(), connection


def walk(emu: Emulator, path: str, session: requests.Session) -> list[dict[str, Any]]:
    """Follow ``next_page_url`` from ``path``; return every page."""
    pages = []
    url: str | None = emu.base_url + path
    while url is not None:
        answer = session.get(url, timeout=10)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        url = pages[-1]["meta"]["next_page_url"]
    return pages


def emulator_with(fault: Fault | str, **kwargs: Any) -> Emulator:
    """An emulator (not started) whose first request gets ``fault``."""
    return Emulator(users=120, faults=FaultPlan(at={0: fault}), **kwargs)


# -- paging --------------------------------------------------------------------


def test_paging_returns_every_user_in_order(
    emu: Emulator, session: requests.Session
) -> None:
    pages = walk(emu, users_path(emu), session)

    assert len(pages) == 25
    assert [user for page in pages for user in page["users"]] == emu.users()
    assert [page["meta"]["page"] for page in pages] == list(range(25))
    assert {page["meta"]["page_size"] for page in pages} == {50}
    assert [len(page["users"]) for page in pages[-2:]] == [50, 34]
    assert pages[0]["meta"]["previous_page_url"] is None
    assert pages[-1]["meta"]["next_page_url"] is None


def test_page_meta_is_twilio_shaped(emu: Emulator, session: requests.Session) -> None:
    first, second = walk(emu, users_path(emu), session)[:2]
    list_url = emu.base_url + users_path(emu)

    assert list(first) == ["meta", "users"]
    assert first["meta"] == {
        "page": 0,
        "page_size": 50,
        "first_page_url": f"{list_url}?PageSize=50&Page=0",
        "previous_page_url": None,
        "url": f"{list_url}?PageSize=50&Page=0",
        "next_page_url": first["meta"]["next_page_url"],
        "key": "users",
    }
    next_url = urlsplit(first["meta"]["next_page_url"])
    assert next_url.query.startswith("PageSize=50&Page=1&PageToken=PA")
    assert second["meta"]["url"] == first["meta"]["next_page_url"]
    assert second["meta"]["first_page_url"] == first["meta"]["url"]
    assert "Page=0&PageToken=" in second["meta"]["previous_page_url"]


def test_previous_page_url_leads_back(emu: Emulator, session: requests.Session) -> None:
    second = walk(emu, users_path(emu), session)[1]

    back = session.get(second["meta"]["previous_page_url"], timeout=10).json()

    assert back["users"] == emu.users()[:50]
    assert back["meta"]["page"] == 0


@pytest.mark.parametrize(("asked", "used"), [("500", 50), ("1000", 50), ("10", 10)])
def test_page_size_is_capped(emu: Emulator, asked: str, used: int) -> None:
    page = fetch(emu, users_path(emu), params={"PageSize": asked}).json()

    assert page["meta"]["page_size"] == used
    assert len(page["users"]) == used
    assert f"PageSize={used}&Page=1" in page["meta"]["next_page_url"]


def test_page_size_cap_is_configurable() -> None:
    with Emulator(users=30, page_size_cap=7) as emu, requests.Session() as session:
        session.auth = (emu.account_sid, emu.auth_token)
        pages = walk(emu, users_path(emu) + "?PageSize=1000", session)

    assert [len(page["users"]) for page in pages] == [7, 7, 7, 7, 2]
    assert {page["meta"]["page_size"] for page in pages} == {7}


@pytest.mark.parametrize("size", ["0", "1001", "abc", "-1", "2.5", ""])
def test_page_size_outside_range_is_400(emu: Emulator, size: str) -> None:
    answer = fetch(emu, users_path(emu), params={"PageSize": size})

    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["code"] == 20001
    assert answer.json()["status"] == 400


def test_later_page_without_token_is_400(emu: Emulator) -> None:
    answer = fetch(emu, users_path(emu), params={"PageSize": "50", "Page": "1"})

    assert answer.status_code == 400
    assert answer.json() == {
        "code": 20001,
        "message": "PageToken is required for paging.",
        "more_info": "https://www.twilio.com/docs/errors/20001",
        "status": 400,
    }


@pytest.mark.parametrize("token", ["PAforged", "PA" + "A" * 16, "XX" + "A" * 16, "PA!"])
def test_tokens_not_issued_are_refused(emu: Emulator, token: str) -> None:
    params = {"PageSize": "50", "Page": "1", "PageToken": token}

    answer = fetch(emu, users_path(emu), params=params)

    assert answer.status_code == 400
    assert answer.json()["code"] == 20001


def test_tampered_token_is_refused(emu: Emulator) -> None:
    next_url = fetch(emu, users_path(emu)).json()["meta"]["next_page_url"]
    token = next_url.rsplit("=", 1)[1]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")

    answer = fetch(emu, next_url.replace(token, tampered))

    assert answer.status_code == 400
    assert answer.json()["message"] == "PageToken is required for paging."


def test_token_of_another_service_is_refused() -> None:
    with Emulator(users=[120, 120]) as emu:
        first, second = emu.service_sids
        next_url = fetch(emu, users_path(emu, first)).json()["meta"]["next_page_url"]
        foreign = next_url.replace(first, second)

        assert fetch(emu, foreign).status_code == 400


def test_same_next_url_gives_same_bytes(emu: Emulator) -> None:
    next_url = fetch(emu, users_path(emu)).json()["meta"]["next_page_url"]

    assert fetch(emu, next_url).content == fetch(emu, next_url).content


def test_empty_service_answers_one_empty_page() -> None:
    with Emulator(users=0) as emu:
        page = fetch(emu, users_path(emu)).json()

    assert page["users"] == []
    assert page["meta"]["next_page_url"] is None
    assert page["meta"]["page"] == 0


# -- auth and errors -------------------------------------------------------------


def test_both_credential_kinds_are_accepted(emu: Emulator) -> None:
    with_token = fetch(emu, users_path(emu), auth=(emu.account_sid, emu.auth_token))
    with_key = fetch(emu, users_path(emu), auth=(emu.api_key, emu.api_secret))

    assert with_token.status_code == with_key.status_code == 200
    assert with_token.content == with_key.content


@pytest.mark.parametrize(
    "auth",
    [None, ("ACwrong", "token"), ("account", ""), ("api-key", "api-secret")],
    ids=["missing", "unknown account", "empty password", "unknown key"],
)
def test_bad_credentials_are_401(emu: Emulator, auth: tuple[str, str] | None) -> None:
    answer = requests.get(emu.base_url + users_path(emu), auth=auth, timeout=10)

    assert answer.status_code == 401
    assert answer.json() == AUTHENTICATE
    assert answer.headers["Content-Type"] == "application/json"


def test_swapped_secret_is_401(emu: Emulator) -> None:
    answer = fetch(emu, users_path(emu), auth=(emu.account_sid, emu.api_secret))

    assert answer.status_code == 401
    assert answer.json() == AUTHENTICATE


@pytest.mark.parametrize(
    "path",
    [
        "/v1/Services/IS00000000000000000000000000000000/Users",
        "/v1/Services/IS00000000000000000000000000000000/Users/US0",
        "/v1/Conversations",
        "/v2/Users",
        "/",
    ],
)
def test_unknown_resources_are_404(emu: Emulator, path: str) -> None:
    answer = fetch(emu, path)

    assert answer.status_code == 404
    assert answer.json()["code"] == 20404
    assert answer.json()["more_info"] == "https://www.twilio.com/docs/errors/20404"


def test_unknown_user_is_404(emu: Emulator) -> None:
    answer = fetch(emu, users_path(emu) + "/nobody%40example.com")

    assert answer.status_code == 404
    assert answer.json()["code"] == 20404


def test_other_methods_are_405(emu: Emulator) -> None:
    answer = requests.post(
        emu.base_url + users_path(emu),
        data={"Identity": "new"},
        auth=(emu.account_sid, emu.auth_token),
        timeout=10,
    )

    assert answer.status_code == 405
    assert answer.json()["status"] == 405


# -- single users, default service, services --------------------------------------


def test_fetch_by_sid_and_by_identity(emu: Emulator) -> None:
    unicode_users = [user for user in emu.users() if not user["identity"].isascii()]
    user = unicode_users[0]

    by_sid = fetch(emu, f"{users_path(emu)}/{user['sid']}").json()
    by_identity = fetch(emu, f"{users_path(emu)}/{quote(user['identity'], safe='')}")

    assert by_identity.status_code == 200
    assert by_identity.json() == by_sid
    without_presence = {**by_sid, "is_online": None, "is_notifiable": None}
    assert without_presence == user


def test_fetch_by_email_identity(emu: Emulator) -> None:
    user = next(user for user in emu.users() if "@" in user["identity"])

    answer = fetch(emu, f"{users_path(emu)}/{quote(user['identity'], safe='')}")

    assert answer.json()["sid"] == user["sid"]


def test_presence_has_booleans_and_nulls(emu: Emulator) -> None:
    with requests.Session() as session:
        session.auth = (emu.account_sid, emu.auth_token)
        fetched = [
            session.get(
                f"{emu.base_url}{users_path(emu)}/{user['sid']}", timeout=10
            ).json()
            for user in emu.users()[:80]
        ]

    assert {user["is_online"] for user in fetched} == {True, False, None}
    assert {user["is_notifiable"] for user in fetched} == {True, False, None}


def test_presence_is_null_without_reachability() -> None:
    with Emulator(users=40, reachability=False) as emu, requests.Session() as session:
        session.auth = (emu.account_sid, emu.auth_token)
        fetched = [
            session.get(
                f"{emu.base_url}{users_path(emu)}/{user['sid']}", timeout=10
            ).json()
            for user in emu.users()
        ]

    assert {user["is_online"] for user in fetched} == {None}
    assert {user["is_notifiable"] for user in fetched} == {None}


def test_list_records_never_carry_presence(emu: Emulator) -> None:
    users = emu.users()

    assert {user["is_online"] for user in users} == {None}
    assert {user["is_notifiable"] for user in users} == {None}


def test_default_service_lists_the_first_service(
    emu: Emulator, session: requests.Session
) -> None:
    pages = walk(emu, "/v1/Users", session)
    users = [user for page in pages for user in page["users"]]

    assert len(pages) == 25
    assert [user["sid"] for user in users] == [user["sid"] for user in emu.users()]
    assert users[0]["url"] == f"{emu.base_url}/v1/Users/{users[0]['sid']}"
    assert (
        pages[0]["meta"]["first_page_url"]
        == f"{emu.base_url}/v1/Users?PageSize=50&Page=0"
    )


def test_default_service_fetch(emu: Emulator) -> None:
    user = emu.users()[3]

    fetched = fetch(emu, f"/v1/Users/{user['sid']}").json()

    assert fetched["identity"] == user["identity"]
    assert fetched["url"] == f"{emu.base_url}/v1/Users/{user['sid']}"


def test_services_are_listed() -> None:
    with Emulator(users=[3, 0, 5]) as emu:
        page = fetch(emu, "/v1/Services").json()
        empty = fetch(emu, users_path(emu, emu.service_sids[1])).json()
        counts = [len(emu.users(sid)) for sid in emu.service_sids]

    assert page["meta"]["key"] == "services"
    assert [service["sid"] for service in page["services"]] == emu.service_sids
    assert {service["account_sid"] for service in page["services"]} == {emu.account_sid}
    assert page["services"][0]["links"]["users"] == emu.base_url + users_path(emu)
    assert empty["users"] == []
    assert counts == [3, 0, 5]


# -- the wire ------------------------------------------------------------------


def test_gzip_is_served_on_request(emu: Emulator) -> None:
    plain, connection = raw_get(emu, users_path(emu))
    with closing(connection):
        plain_body = plain.read()
    zipped, connection = raw_get(emu, users_path(emu), {"Accept-Encoding": "gzip"})
    with closing(connection):
        zipped_body = zipped.read()

    assert plain.getheader("Content-Encoding") is None
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert int(zipped.getheader("Content-Length", "0")) == len(zipped_body)
    assert len(zipped_body) < len(plain_body)
    assert gzip.decompress(zipped_body) == plain_body


def test_gzip_refused_with_zero_quality(emu: Emulator) -> None:
    answer, connection = raw_get(emu, users_path(emu), {"Accept-Encoding": "gzip;q=0"})
    with closing(connection):
        answer.read()

    assert answer.getheader("Content-Encoding") is None


def test_connection_is_kept_alive(emu: Emulator) -> None:
    parts = urlsplit(emu.base_url)
    with closing(
        http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    ) as connection:
        sockets = []
        for path in (users_path(emu), "/v1/Services", "/v1/nowhere"):
            connection.request(
                "GET", path, headers={"Authorization": authorization(emu)}
            )
            answer = connection.getresponse()
            body = answer.read()
            assert int(answer.getheader("Content-Length", "-1")) == len(body)
            sockets.append(connection.sock)

    assert sockets[0] is not None
    assert sockets[0] is sockets[1] is sockets[2]


def test_requests_are_logged() -> None:
    with Emulator(users=10) as emu:
        fetch(emu, users_path(emu), params={"PageSize": "5"})
        fetch(emu, "/v1/Users", auth=None)
        log = emu.requests

    assert [
        (entry.method, entry.path, entry.status, entry.authorized) for entry in log
    ] == [
        ("GET", users_path(emu), 200, True),
        ("GET", "/v1/Users", 401, False),
    ]
    assert log[0].query == {"PageSize": "5"}
    assert log[0].fault is None


# -- limits ----------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after() -> None:
    with Emulator(users=10, rate_limit=2) as emu, requests.Session() as session:
        session.auth = (emu.account_sid, emu.auth_token)
        answers = [
            session.get(emu.base_url + users_path(emu), timeout=10) for _ in range(5)
        ]

    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused
    assert refused[0].json() == TOO_MANY_REQUESTS
    assert int(refused[0].headers["Retry-After"]) >= 1


def test_rate_limit_recovers() -> None:
    with Emulator(users=10, rate_limit=20) as emu, requests.Session() as session:
        session.auth = (emu.account_sid, emu.auth_token)
        statuses = [
            session.get(emu.base_url + users_path(emu), timeout=10).status_code
            for _ in range(40)
        ]
        time.sleep(0.2)
        later = session.get(emu.base_url + users_path(emu), timeout=10).status_code

    assert 429 in statuses
    assert later == 200


def test_concurrency_limit_answers_429() -> None:
    answers: list[requests.Response] = []
    start_together = threading.Barrier(2)
    with Emulator(users=10, max_concurrency=1, latency=0.4) as emu:

        def one() -> None:
            start_together.wait()
            answers.append(fetch(emu, users_path(emu)))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        afterwards = fetch(emu, users_path(emu)).status_code

    assert sorted(answer.status_code for answer in answers) == [200, 429]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json() == TOO_MANY_REQUESTS
    assert refused.headers["Retry-After"] == "1"
    assert afterwards == 200


# -- faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("status_500", 500, 20500),
        ("status_502", 502, 20502),
        ("status_503", 503, 20503),
        ("status_504", 504, 20504),
    ],
)
def test_json_status_faults(fault: str, status: int, code: int) -> None:
    with emulator_with(fault) as emu:
        answer = fetch(emu, users_path(emu))
        retry = fetch(emu, users_path(emu))

    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["code"] == code
    assert answer.json()["status"] == status
    assert retry.status_code == 200
    assert emu.fault_counts == {fault: 1}


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault("html_502"), 502),
        (Fault("html_503"), 503),
        (Fault("html_504"), 504),
        (Fault("status_500", html=True), 500),
    ],
)
def test_html_gateway_faults(fault: Fault, status: int) -> None:
    with emulator_with(fault) as emu:
        answer = fetch(emu, users_path(emu))

    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("text/html")
    assert f"<title>{status} " in answer.text


def test_status_429_fault_sends_retry_after_seconds() -> None:
    with emulator_with(Fault("status_429", retry_after=7)) as emu:
        answer = fetch(emu, users_path(emu))

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.json() == TOO_MANY_REQUESTS


def test_status_429_fault_sends_retry_after_date() -> None:
    fault = Fault("status_429", retry_after=30, retry_after_form="http_date")
    with emulator_with(fault) as emu:
        answer = fetch(emu, users_path(emu))

    when = parsedate_to_datetime(answer.headers["Retry-After"])
    assert 20 <= when.timestamp() - time.time() <= 40
    assert answer.json() == TOO_MANY_REQUESTS


def test_status_429_fault_without_retry_after() -> None:
    with emulator_with(Fault("status_429", retry_after_form="absent")) as emu:
        answer = fetch(emu, users_path(emu))

    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers


def test_reset_before_body_sends_nothing() -> None:
    with emulator_with("reset_before_body") as emu:
        parts = urlsplit(emu.base_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
            raw.sendall(f"GET {users_path(emu)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with pytest.raises(ConnectionResetError):
                raw.recv(1024)
        retry = fetch(emu, users_path(emu))

    assert retry.status_code == 200
    assert emu.requests[0].status == 0
    assert emu.fault_counts == {"reset_before_body": 1}


def test_reset_before_body_is_a_connection_error() -> None:
    with emulator_with("reset_before_body") as emu:
        with pytest.raises(requests.ConnectionError):
            fetch(emu, users_path(emu))
        assert fetch(emu, users_path(emu)).status_code == 200


def test_reset_mid_body_cuts_the_body() -> None:
    with emulator_with("reset_mid_body") as emu:
        answer, connection = raw_get(emu, users_path(emu))
        with closing(connection), pytest.raises(http.client.IncompleteRead) as cut:
            answer.read()
        full = fetch(
            emu, users_path(emu), headers={"Accept-Encoding": "identity"}
        ).content

    assert answer.status == 200
    assert int(answer.getheader("Content-Length", "0")) == len(full)
    assert cut.value.partial == full[: len(full) // 2]


def test_short_body_announces_more_than_it_sends() -> None:
    with emulator_with("short_body") as emu:
        answer, connection = raw_get(emu, users_path(emu))
        with closing(connection), pytest.raises(http.client.IncompleteRead) as cut:
            answer.read()
        full = fetch(
            emu, users_path(emu), headers={"Accept-Encoding": "identity"}
        ).content

    assert int(answer.getheader("Content-Length", "0")) > len(full)
    assert cut.value.partial == full


def test_faults_leave_paging_state_alone() -> None:
    plan = FaultPlan(at={1: ["reset_mid_body", "short_body", "status_503"]})
    with Emulator(users=120, faults=plan) as emu:
        next_url = fetch(emu, users_path(emu)).json()["meta"]["next_page_url"]
        for _ in range(3):
            with pytest.raises(requests.RequestException):
                fetch(emu, next_url).raise_for_status()
        second = fetch(emu, next_url).json()

    assert second["users"] == emu.users()[50:100]
    assert emu.fault_counts == {"reset_mid_body": 1, "short_body": 1, "status_503": 1}


def test_stall_delays_the_answer() -> None:
    with emulator_with(Fault("stall", seconds=0.3)) as emu:
        started = time.monotonic()
        answer = fetch(emu, users_path(emu))
        waited = time.monotonic() - started

    assert answer.status_code == 200
    assert waited >= 0.3
    assert emu.requests[0].fault == "stall"


def test_stall_outlasts_a_read_timeout() -> None:
    with emulator_with(Fault("stall", seconds=5)) as emu:
        with pytest.raises(requests.ReadTimeout):
            requests.get(
                emu.base_url + users_path(emu),
                auth=(emu.account_sid, emu.auth_token),
                timeout=(5, 0.2),
            )
        started = time.monotonic()
    # Leaving the block stopped the emulator while the handler was stalled.
    assert time.monotonic() - started < 2


def test_stop_is_prompt_while_a_request_stalls() -> None:
    failures: list[BaseException] = []
    emu = emulator_with(Fault("stall", seconds=30))
    emu.start()

    def stalled() -> None:
        try:
            fetch(emu, users_path(emu))
        except requests.RequestException as error:
            failures.append(error)

    client = threading.Thread(target=stalled)
    client.start()
    time.sleep(0.2)
    started = time.monotonic()
    emu.stop()
    stopped_in = time.monotonic() - started
    client.join(5)

    assert stopped_in < 2
    assert not client.is_alive()
    assert len(failures) == 1


def test_html_200_fault_sends_a_login_page() -> None:
    with emulator_with("html_200") as emu:
        answer = fetch(emu, users_path(emu))

    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "<form" in answer.text


def test_empty_200_fault_sends_no_body() -> None:
    with emulator_with("empty_200") as emu:
        answer = fetch(emu, users_path(emu))

    assert answer.status_code == 200
    assert answer.headers["Content-Length"] == "0"
    assert answer.content == b""


def test_every_fault_kind_is_tested() -> None:
    tested = {
        "status_429", "status_500", "status_502", "status_503", "status_504",
        "html_502", "html_503", "html_504", "reset_before_body", "reset_mid_body",
        "short_body", "stall", "html_200", "empty_200",
    }  # fmt: skip
    assert set(FAULT_KINDS) == tested


def test_random_plan_is_deterministic() -> None:
    def kinds(plan: FaultPlan) -> list[str | None]:
        return [getattr(plan.fault_for(index), "kind", None) for index in range(300)]

    same = kinds(FaultPlan(rate=0.3, seed=7))
    drawn = [kind for kind in same if kind is not None]

    assert same == kinds(FaultPlan(rate=0.3, seed=7))
    assert same != kinds(FaultPlan(rate=0.3, seed=8))
    assert 50 <= len(drawn) <= 130
    assert set(drawn) <= set(FAULT_KINDS) - {"stall", "html_200", "empty_200"}


def test_random_plan_is_deterministic_over_http() -> None:
    def served_faults(seed: int) -> list[str | None]:
        kinds = ("status_503", "status_429", "html_502")
        plan = FaultPlan(rate=0.5, seed=seed, kinds=kinds)
        with Emulator(users=10, faults=plan) as emu, requests.Session() as session:
            session.auth = (emu.account_sid, emu.auth_token)
            for _ in range(30):
                session.get(emu.base_url + users_path(emu), timeout=10)
            return [entry.fault for entry in emu.requests]

    first = served_faults(11)

    assert first == served_faults(11)
    assert first != served_faults(12)
    assert {"status_503", "status_429", "html_502", None} == set(first)


def test_scheduled_sequence_lands_on_consecutive_requests() -> None:
    plan = FaultPlan(at={2: ["status_503", Fault("status_429")]})

    assert [getattr(plan.fault_for(i), "kind", None) for i in range(5)] == [
        None,
        None,
        "status_503",
        "status_429",
        None,
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0=status_429,1=reset_before_body", ["status_429", "reset_before_body", None]),
        ("1=status_503+status_503", [None, "status_503", "status_503"]),
        ("rate=1,seed=3,kinds=short_body", ["short_body"] * 3),
        ("rate=0.0,seed=7", [None, None, None]),
    ],
)
def test_parse_plans(text: str, expected: list[str | None]) -> None:
    plan = FaultPlan.parse(text)

    assert [getattr(plan.fault_for(i), "kind", None) for i in range(3)] == expected


def test_parse_fault_options() -> None:
    plan = FaultPlan.parse(
        "0=status_429:retry_after=3:retry_after_form=http_date,1=stall:seconds=0.5"
    )

    assert plan.schedule == {
        0: Fault("status_429", retry_after=3, retry_after_form="http_date"),
        1: Fault("stall", seconds=0.5),
    }


def test_parse_random_kinds() -> None:
    plan = FaultPlan.parse("rate=0.1,seed=3,kinds=status_503+reset_mid_body")
    kinds = {getattr(plan.fault_for(i), "kind", None) for i in range(500)}

    assert kinds == {None, "status_503", "reset_mid_body"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate=2", "rate must be between 0 and 1"),
        ("rate=fast", "rate must be a number"),
        ("kinds=nope,rate=0.5", "unknown fault kind 'nope'"),
        ("0=status_418", "unknown fault kind 'status_418'"),
        ("0", "is not key=value"),
        ("speed=3", "unknown key 'speed'"),
        ("0=status_429:wait=3", "bad option 'wait=3'"),
        (
            "0=status_429:retry_after=soon",
            "fault plan item '0=status_429:retry_after=soon'",
        ),
        ("0=reset_mid_body:html=true", "html=True applies to status_5xx kinds"),
    ],
)
def test_parse_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FaultPlan.parse(text)


def test_fault_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="valid kinds are status_429"):
        Fault("teapot")


# -- the dataset -------------------------------------------------------------------


def dataset(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return make_users(
        n,
        seed=seed,
        account_sid="AC" + "a" * 32,
        service_sid="IS" + "b" * 32,
        base_url="http://127.0.0.1:9",
    )


def test_make_users_is_deterministic() -> None:
    assert dataset(500) == dataset(500)
    assert dataset(500) != dataset(500, seed=1)
    assert dataset(500)[:100] == dataset(100)


def test_make_users_records_are_well_formed() -> None:
    users = dataset(3000)

    assert len({user["sid"] for user in users}) == 3000
    assert len({user["identity"] for user in users}) == 3000
    for user in users:
        assert SID.match(user["sid"])
        assert SID.match(user["role_sid"])
        assert STAMP.match(user["date_created"])
        assert STAMP.match(user["date_updated"])
        assert user["date_updated"] >= user["date_created"]
        assert isinstance(json.loads(user["attributes"]), dict)
        assert (
            user["url"]
            == f"http://127.0.0.1:9/v1/Services/{'IS' + 'b' * 32}/Users/{user['sid']}"
        )
        assert user["links"] == {"user_conversations": user["url"] + "/Conversations"}


def test_make_users_is_realistic() -> None:
    users = dataset(3000)
    identities = [user["identity"] for user in users]
    names = [user["friendly_name"] for user in users]
    attributes = [json.loads(user["attributes"]) for user in users]

    assert any(re.search(r"[\u4e00-\u9fff\uac00-\ud7af]", text) for text in identities)
    assert any(re.search(r"[\U0001F300-\U0001FAFF]", text) for text in identities)
    assert any("@" in text and not text.isascii() for text in identities)
    assert 0 < names.count(None) < 300
    assert 0.3 < attributes.count({}) / len(attributes) < 0.6
    assert any(isinstance(value.get("team"), dict) for value in attributes)
    assert any(isinstance(value.get("tags"), list) for value in attributes)
    assert len({user["date_created"][:4] for user in users}) >= 5
    assert any(user["date_updated"] > user["date_created"] for user in users)


def test_make_users_builds_300_000_quickly() -> None:
    started = time.perf_counter()
    users = dataset(300_000)
    elapsed = time.perf_counter() - started

    assert len(users) == 300_000
    assert elapsed < 10


def test_credentials_are_seeded() -> None:
    first, again, other = Emulator(seed=5), Emulator(seed=5), Emulator(seed=6)

    assert first.account_sid == again.account_sid != other.account_sid
    assert SID.match(first.account_sid)
    assert re.fullmatch(r"[0-9a-f]{32}", first.auth_token)
    assert re.fullmatch(r"SK[0-9a-f]{32}", first.api_key)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", first.api_secret)
    assert first.service_sids == again.service_sids
    assert first.auth_token not in repr(first)


# -- the emulator object -------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"users": -1},
        {"users": []},
        {"page_size_cap": 0},
        {"latency": -1.0},
        {"rate_limit": 0},
        {"max_concurrency": 0},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be|needs"):
        Emulator(**settings)


def test_users_needs_a_started_emulator() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        Emulator(users=1).users()


def test_users_of_an_unknown_service() -> None:
    with Emulator(users=1) as emu, pytest.raises(ValueError, match="unknown service"):
        emu.users("IS" + "0" * 32)


def test_users_returns_copies(emu: Emulator) -> None:
    emu.users()[0]["identity"] = "changed"

    assert emu.users()[0]["identity"] != "changed"


def test_stop_twice_is_harmless() -> None:
    emu = Emulator(users=1)
    emu.start()
    emu.stop()
    emu.stop()


def test_public_names_are_sorted_and_importable() -> None:
    names = emulator_module.__all__

    assert names == sorted(names, key=lambda name: (not name.isupper(), name.lower()))
    assert all(hasattr(emulator_module, name) for name in names)


# -- the official contract -------------------------------------------------------------


class SpecRequest:
    """An openapi-core request for a path on Twilio's host."""

    host_url = TWILIO_HOST
    method = "get"
    body = None
    content_type = "application/json"

    def __init__(self, path: str, query: Mapping[str, str], auth: str) -> None:
        self.path = path
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(query.items())),
            header=Headers({"Authorization": auth}),
        )


class SpecResponse:
    """An openapi-core response: a requests response, or its JSON replaced."""

    def __init__(self, answer: requests.Response, data: bytes | None = None) -> None:
        self.status_code = answer.status_code
        self.content_type = answer.headers.get("Content-Type", "").lower()
        self.headers = Headers(dict(answer.headers))
        self.data = answer.content if data is None else data


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    if not SPEC_PATH.is_file():
        pytest.fail(
            f"the API contract is missing: expected {SPEC_PATH} (the shared/ folder "
            "beside the repository clone)"
        )
    return OpenAPI.from_dict(orjson.loads(SPEC_PATH.read_bytes()))


def validate(spec: OpenAPI, emu: Emulator, url: str) -> dict[str, Any]:
    """GET ``url`` from the emulator; validate request and answer against the spec."""
    parts = urlsplit(url if url.startswith("http") else emu.base_url + url)
    answer = fetch(emu, parts.geturl())
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if pair)
    request = SpecRequest(parts.path, query, authorization(emu))

    assert answer.status_code == 200, answer.text
    spec.validate_request(request)
    spec.validate_response(request, SpecResponse(answer))
    return dict(answer.json())


def test_list_pages_match_the_spec(spec: OpenAPI, emu: Emulator) -> None:
    first = validate(spec, emu, users_path(emu))
    second = validate(spec, emu, first["meta"]["next_page_url"])

    last_url = second["meta"]["next_page_url"]
    for _ in range(22):
        last_url = fetch(emu, last_url).json()["meta"]["next_page_url"]
    last = validate(spec, emu, last_url)

    assert last["meta"]["next_page_url"] is None
    for page in (first, second, last):
        urls = [
            page["meta"][name] for name in ("first_page_url", "url", "next_page_url")
        ]
        assert all(url is None or url.startswith(emu.base_url + "/v1/") for url in urls)


def test_fetch_matches_the_spec(spec: OpenAPI, emu: Emulator) -> None:
    user = next(user for user in emu.users() if not user["identity"].isascii())

    validate(spec, emu, f"{users_path(emu)}/{user['sid']}")
    validate(spec, emu, f"{users_path(emu)}/{quote(user['identity'], safe='')}")
    validate(spec, emu, f"/v1/Users/{user['sid']}")


def test_default_list_and_services_match_the_spec(spec: OpenAPI, emu: Emulator) -> None:
    validate(spec, emu, "/v1/Users?PageSize=20")
    services = validate(spec, emu, "/v1/Services")

    assert services["meta"]["key"] == "services"


def test_the_configuration_names_the_default_service_as_the_spec_has_it(
    spec: OpenAPI,
) -> None:
    with Emulator(users=[0, 3], seed=4) as emu:
        configuration = validate(spec, emu, "/v1/Configuration")

    assert configuration["default_chat_service_sid"] == emu.service_sid
    assert configuration["account_sid"] == emu.account_sid
    assert configuration["url"] == f"{emu.base_url}/v1/Configuration"


def test_spec_validation_catches_a_bad_record(spec: OpenAPI, emu: Emulator) -> None:
    answer = fetch(emu, users_path(emu))
    page = answer.json()
    page["users"][0]["sid"] = "not-a-sid"
    request = SpecRequest(users_path(emu), {}, authorization(emu))

    with pytest.raises(InvalidData, match="not-a-sid"):
        spec.validate_response(request, SpecResponse(answer, orjson.dumps(page)))
