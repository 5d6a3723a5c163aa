"""Pagination: next links, envelopes, and the guards on both."""

from __future__ import annotations

from typing import Any

import pytest
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
from conv_frames import PaginationError, SchemaError

NEXT_1 = f"{{BASE}}{USERS_PATH}?PageSize=2&Page=1&PageToken=PT0a0a0a0a0a0a0a0a"


def load(server: ScriptedServer, **options: Any) -> Any:
    options.setdefault("page_size", 2)
    return conv_frames.load_users(
        SERVICE_SID,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        base_url=server.base_url,
        sleep=lambda _: None,
        **options,
    )


def two_pages() -> list[Step]:
    return [
        Step(json=users_page([user_record(1), user_record(2)], next_page_url=NEXT_1)),
        Step(json=users_page([user_record(3)], page=1)),
    ]


def test_follows_next_page_url_exactly_as_given() -> None:
    """BUG-01, BUG-02: the link comes from meta.next_page_url, token and all."""
    unscripted = Step(400, json=twilio_error(400, 20001, "PageToken is required"))
    with ScriptedServer(two_pages(), default=unscripted) as server:
        frame = load(server)

    assert list(frame["sid"]) == [f"US{n:032d}" for n in (1, 2, 3)]
    first, second = server.requests
    assert first.path == USERS_PATH
    assert first.query == {"PageSize": "2"}
    assert second.query == {
        "PageSize": "2",
        "Page": "1",
        "PageToken": "PT0a0a0a0a0a0a0a0a",
    }
    assert "Authorization" in first.headers
    assert "Authorization" in second.headers
    assert frame.attrs["pages"] == 2
    assert frame.attrs["requests"] == 2


def test_trusts_the_servers_page_size_not_its_own_arithmetic() -> None:
    """Asked for 1000, served 2 per page: every page is still followed."""
    steps = [
        Step(json=users_page([user_record(1), user_record(2)], next_page_url=NEXT_1)),
        Step(json=users_page([user_record(3)], page=1)),
    ]
    with ScriptedServer(steps) as server:
        frame = load(server, page_size=1000)

    assert len(frame) == 3
    assert server.requests[0].query == {"PageSize": "1000"}


def test_empty_service_gives_an_empty_typed_frame() -> None:
    with ScriptedServer([Step(json=users_page([]))]) as server:
        frame = load(server)

    assert frame.empty
    assert list(frame.columns) == list(conv_frames.USERS_SCHEMA.names)
    assert str(frame.dtypes["date_created"]) == "datetime64[us, UTC]"
    assert frame.attrs["pages"] == 1


def test_a_link_that_repeats_a_visited_page_stops_the_load() -> None:
    """BUG-04: page 1 links to itself; nothing is requested a third time."""
    looping = users_page([user_record(3)], page=1, next_page_url=NEXT_1, url=NEXT_1)
    steps = [two_pages()[0], Step(json=looping)]
    with ScriptedServer(steps, default=Step(json=looping)) as server:
        with pytest.raises(PaginationError, match="repeats a page already loaded"):
            load(server)

    assert len(server.requests) == 2


def test_a_page_the_server_says_it_already_served_is_a_loop() -> None:
    """The server's own meta.url counts: a new link to page 0 again is refused."""
    again = f"{{BASE}}{USERS_PATH}?PageSize=2&Page=0"
    steps = [
        Step(json=users_page([user_record(1)], next_page_url=NEXT_1)),
        Step(json=users_page([user_record(2)], page=1, next_page_url=again)),
    ]
    with ScriptedServer(steps) as server:
        with pytest.raises(PaginationError, match=r"Page=0: it repeats a page"):
            load(server)

    assert len(server.requests) == 2


def test_max_pages_bounds_a_chain_that_never_ends() -> None:
    def page(n: int) -> Step:
        link = f"{{BASE}}{USERS_PATH}?PageSize=2&Page={n + 1}&PageToken=PT{n + 1}"
        return Step(json=users_page([user_record(n)], page=n, next_page_url=link))

    with ScriptedServer([page(n) for n in range(10)]) as server:
        with pytest.raises(PaginationError, match="max_pages=3"):
            load(server, max_pages=3)

    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("http://127.0.0.2:{port}" + USERS_PATH + "?Page=1&PageToken=x", "origin"),
        ("https://127.0.0.1:{port}" + USERS_PATH + "?Page=1&PageToken=x", "origin"),
        ("//evil.example" + USERS_PATH + "?Page=1&PageToken=x", "origin"),
        ("http://user:pw@127.0.0.1:{port}" + USERS_PATH + "?Page=1", "credentials"),
        ("{BASE}/v1/Services/" + SERVICE_SID + "/Roles?Page=1&PageToken=x", "path"),
        ("{BASE}/v1/Users?Page=1&PageToken=x", "path"),
    ],
    ids=[
        "other-host",
        "other-scheme",
        "protocol-relative",
        "userinfo",
        "sibling",
        "up",
    ],
)
def test_foreign_next_links_are_refused_before_any_request(
    link: str, reason: str
) -> None:
    with ScriptedServer([]) as server:
        port = server.base_url.rsplit(":", 1)[1]
        server.steps.append(
            Step(
                json=users_page(
                    [user_record(1)], next_page_url=link.replace("{port}", port)
                )
            )
        )
        with pytest.raises(PaginationError, match=reason) as caught:
            load(server)

    assert len(server.requests) == 1
    assert "pw@" not in str(caught.value)


def test_a_next_link_to_another_port_sends_that_server_nothing() -> None:
    """The DESIGN rule: credentials go only to the origin the load started on."""
    with ScriptedServer([Step(json=users_page([user_record(9)]))]) as other:
        link = f"{other.base_url}{USERS_PATH}?PageSize=2&Page=1&PageToken=PT1"
        steps = [Step(json=users_page([user_record(1)], next_page_url=link))]
        with ScriptedServer(steps) as server:
            with pytest.raises(PaginationError, match="leaves the origin"):
                load(server)

    assert other.requests == []
    assert len(server.requests) == 1


def test_a_redirect_is_not_followed_and_the_other_origin_hears_nothing() -> None:
    """BUG-12: a 302 to another origin must not carry the credentials there."""
    with ScriptedServer([], default=Step(json=users_page([user_record(9)]))) as other:
        location = f"{other.base_url}{USERS_PATH}?PageSize=2"
        redirect = Step(302, body="", headers={"Location": location})
        with ScriptedServer([redirect]) as server:
            with pytest.raises(conv_frames.APIError, match="302") as caught:
                load(server)

    assert other.requests == []
    assert len(server.requests) == 1
    assert caught.value.status == 302
    assert location in str(caught.value)
    assert "not followed" in str(caught.value)


def meta(**overrides: Any) -> dict[str, Any]:
    envelope = users_page([user_record(1)])
    envelope["meta"].update(overrides)
    return envelope


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (meta(key="conversations"), "meta.key is 'conversations', expected 'users'"),
        (
            {"meta": users_page([])["meta"], "members": [user_record(1)]},
            "NoneType under 'users', expected a list",
        ),
        ({**users_page([]), "users": None}, "NoneType under 'users'"),
        ({**users_page([]), "users": {"0": user_record(1)}}, "dict under 'users'"),
        ({"users": [user_record(1)]}, "no 'meta' object"),
        (
            {**users_page([]), "users": [user_record(1), "US2"]},
            "item 1 of 'users' is a str",
        ),
        ([], "is a JSON list, not an object"),
        (meta(next_page_url=7), "meta.next_page_url is 7"),
    ],
    ids=[
        "key-names-other-list",
        "list-under-other-name",
        "list-null",
        "list-is-object",
        "meta-missing",
        "item-not-object",
        "bare-list",
        "next-not-a-url",
    ],
)
def test_an_envelope_that_lies_is_a_schema_error_not_an_empty_result(
    body: Any, message: str
) -> None:
    """BUG-27 and BUG-29's bare list: not retried, never an empty frame."""
    with ScriptedServer([Step(json=body)], default=Step(json=users_page([]))) as server:
        with pytest.raises(SchemaError, match=message):
            load(server)

    assert len(server.requests) == 1


def test_iter_user_pages_yields_raw_records_page_by_page() -> None:
    with ScriptedServer(two_pages()) as server:
        pages = list(
            conv_frames.iter_user_pages(
                SERVICE_SID,
                page_size=2,
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                base_url=server.base_url,
            )
        )

    assert [page.number for page in pages] == [0, 1]
    assert [[user["sid"] for user in page] for page in pages] == [
        [f"US{1:032d}", f"US{2:032d}"],
        [f"US{3:032d}"],
    ]
    assert pages[0] == [user_record(1), user_record(2)]
    assert pages[0].page_size == 2
    assert pages[1].next_page_url is None


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        (f"http://u:p@127.0.0.1:99999{USERS_PATH}?Page=1", "not a valid URL"),
        (f"http://[::1{USERS_PATH}?Page=1", "not a valid URL"),
        (f"http://127.0.0.1:abc{USERS_PATH}?Page=1", "not a valid URL"),
    ],
    ids=["port-out-of-range", "broken-ipv6", "port-not-a-number"],
)
def test_a_next_link_urllib_cannot_parse_is_a_pagination_error(
    link: str, reason: str
) -> None:
    with ScriptedServer(
        [Step(json=users_page([user_record(1)], next_page_url=link))]
    ) as s:
        with pytest.raises(PaginationError, match=reason) as caught:
            load(s)

    assert len(s.requests) == 1
    assert "u:p@" not in str(caught.value)


def test_a_redirect_whose_location_urllib_cannot_parse_is_still_an_api_error() -> None:
    redirect = Step(302, body="", headers={"Location": "http://u:p@h:abc/"})
    with ScriptedServer([redirect]) as server:
        with pytest.raises(conv_frames.APIError, match="redirect to http://h:abc/"):
            load(server)
