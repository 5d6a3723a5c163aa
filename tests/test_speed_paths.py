"""The fast paths of #4 give the same answers as the paths they shortcut.

- the one-pass normalizer types a page as the column-by-column path does, and
  leaves every page it cannot type to it; a whole page, errors included, comes
  out of ``normalize_records`` as it does when every record takes the slow path;
- merged batches make the same frame as the pages they merge;
- the fast transport lane reports every fault with the words requests would;
- the walk sends at most the next page's request ahead, and an error stops it
  where it happened, with no page lost or repeated;
- a load over TLS trusts what requests would, and a refused certificate is one
  clear error, not retried;
- ``load_services`` loads services side by side within its bound, and one
  failure loses none of the others.

Nothing here measures time: the benchmarks do (``python -m benchmarks.run``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pandas as pd
import pyarrow as pa
import pytest
import requests
import trustme
from pandas.testing import assert_frame_equal
from scripted import (
    ScriptedServer,
    Step,
    count_connections,
    twilio_error,
    user_record,
    users_page,
)

import conv_frames
from conv_frames import ConfigurationError, ServicesLoadError, TransportError
from conv_frames._config import Credentials
from conv_frames._frame import (
    BatchCollector,
    InvalidAttributes,
    UserBatch,
    _columns_in_one_pass,
    _columns_one_by_one,
    _known_values,
    batches_to_frame,
    count_duplicate_sids,
    decode_attribute_text,
    normalize_records,
)
from conv_frames._pages import Page, iter_pages
from conv_frames._schema import COLUMNS, JSON_TEXT
from conv_frames._transport import LoadStats, RetryPolicy, Transport
from conv_frames.emulator import Emulator, Fault, FaultPlan, make_users

# --- the normalizer ------------------------------------------------------------


def emulator_records(count: int) -> list[dict[str, Any]]:
    """Users as the emulator serves them, decoded as the loader decodes them."""
    records = make_users(
        count,
        seed=4,
        account_sid="AC" + "a1" * 16,
        service_sid="IS" + "5e" * 16,
        base_url="http://127.0.0.1:8765",
    )
    decoded: list[dict[str, Any]] = orjson.loads(orjson.dumps(records))
    return decoded


def without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != name}


TYPED_IN_ONE_PASS = {
    "emulator users": emulator_records(60),
    "nulls everywhere": [user_record(1, **dict.fromkeys(["identity", "url"]))],
    "fields missing": [{"sid": "US" + "1" * 32}, {"identity": "no-sid"}],
    "a field missing from one record": [user_record(1), without(user_record(2), "url")],
    "presence known": [user_record(1, is_online=True, is_notifiable=False)],
    "non-ASCII and emoji": [user_record(1, friendly_name="Zoë 李 🚀", identity="é")],
    "offsets and fractions": [
        user_record(1, date_created="2021-06-01T08:00:00.250-07:00"),
        user_record(2, date_updated="2021-06-01T08:00:00.123456+05:30"),
    ],
    "empty and null links": [user_record(1, links={}), user_record(2, links=None)],
    "a link with a null URL": [user_record(1, links={"a": None})],
    "an unknown field": [user_record(1, tier=7), user_record(2)],
    "no records": [],
}

LEFT_TO_THE_COLUMNS = {
    "a boolean as text": [user_record(1, is_online="yes")],
    "a boolean as a number": [user_record(1, is_notifiable=1)],
    "a number as a name": [user_record(1, friendly_name=5)],
    "links as pairs": [user_record(1, links=[["a", "b"]])],
    "a link that is a number": [user_record(1, links={"a": 1})],
    "a date without offset": [user_record(1, date_created="2020-03-24T20:38:21")],
    "a date that is not one": [user_record(1, date_updated="yesterday")],
    "attributes as an object": [user_record(1, attributes={"a": 1})],
}


def one_pass(records: list[Any]) -> list[pa.Array] | None:
    known = _known_values(records)
    return None if known is None else _columns_in_one_pass(known)


@pytest.mark.parametrize("records", TYPED_IN_ONE_PASS.values(), ids=TYPED_IN_ONE_PASS)
def test_one_pass_types_a_page_as_column_by_column_does(
    records: list[dict[str, Any]],
) -> None:
    fast = one_pass(records)

    assert fast is not None
    expected = _columns_one_by_one(records)
    for got, want in zip(fast, expected, strict=True):
        assert got.type == want.type
        assert got.equals(want)


@pytest.mark.parametrize(
    "records", LEFT_TO_THE_COLUMNS.values(), ids=LEFT_TO_THE_COLUMNS
)
def test_a_page_one_pass_refuses_goes_column_by_column(
    records: list[dict[str, Any]],
) -> None:
    assert one_pass(records) is None


def test_a_record_that_is_a_mapping_but_not_a_dict_goes_column_by_column() -> None:
    records = [user_record(1)]
    mapping = [_DictSubclass(user_record(1))]

    assert _known_values(mapping) is None
    assert normalize_records(mapping).table.equals(normalize_records(records).table)


#: Whole pages for the differential test below: every step of normalize_records
#: (columns, attributes in both modes, unknown fields) on fast and slow paths.
PAGES = {
    **TYPED_IN_ONE_PASS,
    **LEFT_TO_THE_COLUMNS,
    "unknown fields of several kinds": [
        user_record(1, tier=7),
        user_record(2, extra={"a": [1]}),
        user_record(3, tier="gold"),
    ],
    "an unknown field in place of a known one": [
        {**without(user_record(1), "url"), "tier": 1},
        user_record(2),
    ],
    "attributes not JSON": [
        user_record(1),
        user_record(2, attributes="{duty: tech"),
        user_record(3, attributes="[1"),
        user_record(4, attributes=None),
    ],
    "attributes not JSON, non-ASCII": [user_record(1, attributes='{"é": tru')],
    "attributes of every JSON kind": [
        user_record(number, attributes=text)
        for number, text in enumerate(['"s"', "1.5", "[]", "null", "true", "{}"])
    ],
    "attributes nested past orjson's limit": [
        user_record(1, attributes="[" * 1030 + "]" * 1030)
    ],
    "a date with nanoseconds": [
        user_record(1, date_updated="2021-06-01T08:00:00.123456789+05:30")
    ],
    "a record that is not an object": [user_record(1), ["US1", "a"]],
}


@pytest.mark.parametrize("mode", ["raise", "null"])
@pytest.mark.parametrize("records", PAGES.values(), ids=PAGES)
def test_a_page_normalizes_as_it_does_on_the_slow_path(
    records: list[Any], mode: InvalidAttributes
) -> None:
    # A dict subclass takes the slow path at every step.
    slow = [_DictSubclass(r) if isinstance(r, dict) else r for r in records]

    fast_batch = normalize_or_error(records, mode)
    slow_batch = normalize_or_error(slow, mode)
    if isinstance(slow_batch, Exception):
        assert type(fast_batch) is type(slow_batch)
        assert str(fast_batch) == str(slow_batch)
        return
    assert isinstance(fast_batch, UserBatch)
    assert fast_batch.table.schema.equals(slow_batch.table.schema)
    assert fast_batch.table.equals(slow_batch.table)
    assert fast_batch.attributes == slow_batch.attributes
    assert fast_batch.invalid_attributes == slow_batch.invalid_attributes
    for backend in ("numpy_nullable", "pyarrow"):
        assert_frame_equal(
            batches_to_frame([fast_batch], dtype_backend=backend),
            batches_to_frame([slow_batch], dtype_backend=backend),
        )


def normalize_or_error(records: list[Any], mode: InvalidAttributes) -> Any:
    try:
        return normalize_records(records, invalid_attributes=mode)
    except conv_frames.SchemaError as error:
        return error


def test_a_page_with_exactly_the_known_fields_has_no_unknown_columns() -> None:
    swapped = {**without(user_record(1), "url"), "tier": 1}

    assert normalize_records([user_record(1)]).table.column_names == list(COLUMNS)
    table = normalize_records([swapped]).table
    assert table.column_names == [*COLUMNS, "tier"]
    assert table.column("url").to_pylist() == [None]
    assert table.column("tier").to_pylist() == [1]


@pytest.mark.parametrize("arrow_type", [JSON_TEXT, pa.string()], ids=["JSON", "text"])
def test_attribute_text_is_decoded_row_by_row_or_at_once_alike(
    arrow_type: pa.DataType,
) -> None:
    # Plain text comes from a lenient load's file: it may hold text not JSON.
    texts = ['{"a": [1, "é"]}', None, "{not json", "3", '"s"', "[" * 1030]
    column = pa.chunked_array([pa.array(texts[:2], arrow_type), texts[2:]], arrow_type)

    expected = [_decoded_or_none(text) for text in texts]
    assert decode_attribute_text(column) == expected
    assert decode_attribute_text(pa.array(texts[:2], arrow_type)) == expected[:2]


def test_a_refused_page_still_names_the_field_and_the_user() -> None:
    with pytest.raises(conv_frames.SchemaError, match=r"'is_online' of user US0+9"):
        normalize_records([user_record(1), user_record(9, is_online="yes")])


def test_invalid_attributes_are_named_or_nulled_as_before() -> None:
    records = [user_record(1), user_record(2, attributes="{duty: tech")]

    with pytest.raises(conv_frames.SchemaError, match=r"'attributes' of user US0+2"):
        normalize_records(records)
    batch = normalize_records(records, invalid_attributes="null")
    assert batch.attributes == [{"duty": "agent"}, None]
    assert batch.invalid_attributes == 1


@pytest.mark.parametrize(
    "sids",
    [[], [None], ["a"], ["a", "a"], ["a", None, "a", None, "b", "a"], [None, None]],
)
def test_duplicate_sids_are_counted_as_a_set_would(sids: list[str | None]) -> None:
    present = [sid for sid in sids if sid is not None]
    expected = len(present) - len(set(present))
    chunks = pa.chunked_array([pa.array(sids[:2], pa.string()), sids[2:]])

    assert count_duplicate_sids(pa.array(sids, pa.string())) == expected
    assert count_duplicate_sids(chunks) == expected
    assert count_duplicate_sids(pa.chunked_array([], pa.string())) == 0


# --- merged batches -----------------------------------------------------------


def test_merged_batches_make_the_frame_the_pages_make() -> None:
    pages = [
        [user_record(1), user_record(2)],
        [user_record(3)],
        [user_record(4, tier=7)],  # an unknown field: kept apart
        [user_record(5), user_record(6, attributes='{"a": [1]}')],
        [user_record(7, attributes="{not json")],  # lenient text: kept apart
        [user_record(8, tier="gold")],
        [user_record(9)],
        [],
    ]
    batches = [normalize_records(page, invalid_attributes="null") for page in pages]
    collector = BatchCollector(merge_rows=2)
    for batch in batches:
        collector.append(batch)

    merged = collector.batches()
    assert len(merged) < len(batches)
    assert_frame_equal(batches_to_frame(merged), batches_to_frame(batches))


def test_merged_batches_have_contiguous_columns() -> None:
    collector = BatchCollector(merge_rows=4)
    for number in range(1, 9):
        collector.append(normalize_records([user_record(number)]))

    merged = collector.batches()
    assert [batch.num_rows for batch in merged] == [4, 4]
    assert all(batch.table.column("sid").num_chunks == 1 for batch in merged)


# --- the transport's two lanes ------------------------------------------------

CREDENTIALS = Credentials("AC" + "a1" * 16, "AC" + "a1" * 16, "token")
POLICY = RetryPolicy(max_attempts=1)


def transport(session: requests.Session | None = None) -> Transport:
    return Transport(CREDENTIALS, timeout=(5.0, 1.0), retry=POLICY, session=session)


def test_the_transports_own_session_never_goes_through_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("requests was used")

    monkeypatch.setattr(requests.Session, "request", refuse)
    with Emulator(users=120) as emu:
        frame = conv_frames.load_users(emu.service_sid, **options(emu))

    assert len(frame) == 120


def test_a_callers_session_is_used_for_every_request() -> None:
    calls: list[Any] = []
    with Emulator(users=120) as emu, requests.Session() as session:
        send = session.request

        def counting(*args: Any, **kwargs: Any) -> requests.Response:
            calls.append(args)
            return send(*args, **kwargs)

        session.request = counting  # type: ignore[method-assign]
        conv_frames.load_users(emu.service_sid, session=session, **options(emu))

    assert len(calls) == 3


def test_an_environment_proxy_leaves_the_origin_to_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    lane = transport()._lane
    assert lane is not None

    assert lane.send("http://127.0.0.1:9/v1/Users", "shown") is None


def test_compression_is_asked_for_except_on_loopback() -> None:
    lane = transport()._lane
    assert lane is not None

    local_url = "http://127.0.0.1:9/v1/Users"
    remote_url = "https://conversations.twilio.com/v1/Users"
    local = lane._open(local_url, urlsplit(local_url))
    remote = lane._open(remote_url, urlsplit(remote_url))
    assert local is not None
    assert remote is not None
    assert local.headers["Accept-Encoding"] == "identity"
    assert "gzip" in remote.headers["Accept-Encoding"]
    assert remote.headers["Authorization"].startswith("Basic ")


def test_the_fast_lane_inflates_a_compressed_page() -> None:
    with Emulator(users=60) as emu:
        url = f"{emu.base_url}/v1/Services/{emu.service_sid}/Users?PageSize=50"
        client = Transport(
            Credentials(emu.account_sid, emu.account_sid, emu.auth_token),
            timeout=(5.0, 5.0),
            retry=POLICY,
        )
        assert client._lane is not None
        plain = client.get_json(url, LoadStats())
        origin = next(iter(client._lane._origins.values()))
        assert origin is not None
        origin.headers["Accept-Encoding"] = "gzip"
        inflated = client.get_json(url, LoadStats())

    assert inflated == plain
    assert len(inflated["users"]) == 50


NETWORK_FAULTS = {
    "reset before the body": Fault("reset_before_body"),
    "reset in the body": Fault("reset_mid_body"),
    "body shorter than announced": Fault("short_body"),
    "no answer": Fault("stall", seconds=3.0),
    "a gateway's HTML 502": Fault("html_502"),
    "an HTML 200": Fault("html_200"),
    "an empty 200": Fault("empty_200"),
}


@pytest.mark.parametrize("fault", NETWORK_FAULTS.values(), ids=NETWORK_FAULTS)
def test_both_lanes_report_a_fault_with_the_same_words(fault: Fault) -> None:
    fast = load_error(fault, session=None)
    with requests.Session() as session:
        slow = load_error(fault, session=session)

    assert type(fast) is type(slow)
    assert str(fast).replace(*ports(fast, slow)) == str(slow)


@pytest.mark.parametrize(
    "step",
    [
        Step(200, body=b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"}),
        Step(200, json=users_page([user_record(1)]), truncate_after=40),
        Step(200, json=users_page([user_record(1)]), chunked=True, truncate_after=40),
        Step(302, headers={"Location": "https://elsewhere.example/"}),
    ],
    ids=["bad gzip", "cut body", "cut chunks", "redirect"],
)
def test_both_lanes_report_a_broken_answer_with_the_same_words(step: Step) -> None:
    with requests.Session() as session:
        fast, slow = (get_error(step, lane) for lane in (None, session))

    assert type(fast) is type(slow)
    assert str(fast).replace(*ports(fast, slow)) == str(slow)


def get_error(step: Step, session: requests.Session | None) -> Exception:
    with ScriptedServer([step]) as server:
        url = f"{server.base_url}/v1/Services/IS{'5e' * 16}/Users"
        with pytest.raises(conv_frames.ConvFramesError) as caught:
            transport(session).get_json(url, LoadStats())
    return caught.value


def load_error(fault: Fault, *, session: requests.Session | None) -> Exception:
    plan = FaultPlan(at={1: fault})
    with Emulator(users=120, faults=plan) as emu:
        with pytest.raises(conv_frames.ConvFramesError) as caught:
            conv_frames.load_users(
                emu.service_sid,
                max_attempts=1,
                timeout=(5.0, 0.5),
                session=session,
                **options(emu),
            )
    return caught.value


def ports(fast: Exception, slow: Exception) -> tuple[str, str]:
    """The two servers' ports differ; everything else must not."""
    found = [str(error).split("127.0.0.1:")[1].split("/")[0] for error in (fast, slow)]
    return f"127.0.0.1:{found[0]}", f"127.0.0.1:{found[1]}"


def options(emu: Emulator) -> dict[str, Any]:
    return {
        "account_sid": emu.account_sid,
        "auth_token": emu.auth_token,
        "base_url": emu.base_url,
    }


# --- the walk one request ahead -----------------------------------------------

LISTING = f"/v1/Services/IS{'5e' * 16}/Users"


def chained(pages: int, *, failing: dict[int, Step] | None = None) -> list[Step]:
    """``pages`` one-user pages linked in order; ``failing`` answers come first."""
    steps: list[Step] = []
    for number in range(pages):
        if failing and number in failing:
            steps.append(failing[number])
        link = None
        if number + 1 < pages:
            link = f"{{BASE}}{LISTING}?Page={number + 1}"
        page = users_page([user_record(number + 1)], page=number, next_page_url=link)
        steps.append(Step(json=page))
    return steps


def walk_ahead(
    server: ScriptedServer, stats: LoadStats, *, max_pages: int | None = None
) -> Iterator[Page]:
    return iter_pages(
        Transport(
            CREDENTIALS,
            timeout=(5.0, 5.0),
            retry=RetryPolicy(max_attempts=3),
            sleep=lambda seconds: None,
        ),
        f"{server.base_url}{LISTING}?Page=0",
        key="users",
        stats=stats,
        max_pages=max_pages,
        ahead=True,
    )


def requested_pages(server: ScriptedServer) -> list[str]:
    return [recorded.query.get("Page", "0") for recorded in server.requests]


def arrived(server: ScriptedServer, count: int) -> bool:
    """Wait (up to 5 s) until the server has seen ``count`` requests."""
    deadline = time.monotonic() + 5
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return len(server.requests) >= count


def test_the_next_request_is_on_the_wire_while_a_page_is_held() -> None:
    with ScriptedServer(chained(5)) as server:
        for page in walk_ahead(server, LoadStats()):
            # Page N is in the caller's hands: page N+1 was asked for, not N+2.
            expected = min(page.number + 2, 5)
            assert arrived(server, expected)
            assert len(server.requests) == expected

    assert requested_pages(server) == ["0", "1", "2", "3", "4"]


def test_an_error_comes_after_every_page_before_it_each_once() -> None:
    missing = Step(404, json=twilio_error(404, 20404, "Not found"))
    steps = [*chained(3), missing]
    steps[2].json["meta"]["next_page_url"] = f"{{BASE}}{LISTING}?Page=3"
    received: list[int] = []
    with ScriptedServer(steps) as server:
        with pytest.raises(conv_frames.APIError, match="Not found"):
            received.extend(page.number for page in walk_ahead(server, LoadStats()))

    assert received == [0, 1, 2]
    assert requested_pages(server) == ["0", "1", "2", "3"]


def test_a_fault_on_the_request_sent_ahead_is_retried_like_any_other() -> None:
    busy = Step(503, json=twilio_error(503, 20503, "Busy"))
    stats = LoadStats()
    with ScriptedServer(chained(4, failing={2: busy})) as server:
        users = [page[0]["sid"] for page in walk_ahead(server, stats)]

    assert users == [user_record(number)["sid"] for number in range(1, 5)]
    assert requested_pages(server) == ["0", "1", "2", "2", "3"]
    assert (stats.pages, stats.requests, stats.retries) == (4, 5, 1)


def test_nothing_is_sent_ahead_past_max_pages() -> None:
    stats = LoadStats()
    with ScriptedServer(chained(5)) as server:
        pages = walk_ahead(server, stats, max_pages=2)
        with pytest.raises(conv_frames.PaginationError, match="max_pages=2"):
            list(pages)

    assert requested_pages(server) == ["0", "1"]
    assert stats.requests == 2


def test_a_bad_link_is_refused_after_its_page_and_never_sent_to() -> None:
    steps = chained(2)
    steps[0].json["meta"]["next_page_url"] = "http://elsewhere.example/v1/Users"
    received: list[int] = []
    with ScriptedServer(steps) as server:
        with pytest.raises(conv_frames.PaginationError, match="leaves the origin"):
            received.extend(page.number for page in walk_ahead(server, LoadStats()))

    assert received == [0]
    assert requested_pages(server) == ["0"]


def test_a_rejected_page_stops_the_walk_before_the_page_after_next() -> None:
    pages = [[user_record(1)], [user_record(2, is_online="yes")], [user_record(3)]]
    pages += [[user_record(number)] for number in range(4, 9)]
    steps = []
    for number, records in enumerate(pages):
        link = None
        if number + 1 < len(pages):
            link = f"{{BASE}}{LISTING}?Page={number + 1}"
        steps.append(Step(json=users_page(records, page=number, next_page_url=link)))

    with ScriptedServer(steps) as server:
        with pytest.raises(conv_frames.SchemaError, match="is_online"):
            conv_frames.load_users(
                "IS" + "5e" * 16,
                account_sid=CREDENTIALS.account_sid,
                auth_token="token",
                base_url=server.base_url,
            )
        # Page 2 was on the wire when page 1 was refused; nothing after it.
        assert arrived(server, 3)
        time.sleep(0.2)  # a request for page 3 would have arrived by now

    assert requested_pages(server)[-1] == "2"
    assert len(server.requests) == 3


# --- several services at once -------------------------------------------------


def test_load_services_gives_each_service_its_own_frame() -> None:
    with Emulator(users=[120, 30, 0, 75]) as emu:
        frames = conv_frames.load_services(
            emu.service_sids, max_workers=2, **options(emu)
        )
        alone = {
            sid: conv_frames.load_users(sid, **options(emu)) for sid in emu.service_sids
        }

    assert list(frames) == emu.service_sids
    for sid, frame in frames.items():
        assert_frame_equal(frame, alone[sid])
        assert frame.attrs["service_sid"] == sid
    assert [len(frame) for frame in frames.values()] == [120, 30, 0, 75]


def test_load_services_keeps_within_its_bound() -> None:
    # The emulator answers 429 to a third request in flight, and no retry is
    # allowed: any excess would fail a service.
    with Emulator(users=[200] * 4, latency=0.01, max_concurrency=2) as emu:
        frames = conv_frames.load_services(
            emu.service_sids, max_workers=2, max_attempts=1, **options(emu)
        )

    assert [len(frame) for frame in frames.values()] == [200] * 4


def test_load_services_runs_services_side_by_side() -> None:
    with Emulator(users=[250, 250], latency=0.02) as emu:
        conv_frames.load_services(emu.service_sids, max_workers=2, **options(emu))
        paths = [entry.path for entry in emu.requests]

    first, second = (f"/v1/Services/{sid}/Users" for sid in emu.service_sids)
    # Sequential loads would list one service's five pages, then the other's.
    assert paths.index(second) < len(paths) - 1 - paths[::-1].index(first)


def test_one_failing_service_loses_none_of_the_others() -> None:
    unknown = "IS" + "ab" * 16
    with Emulator(users=[120, 30]) as emu:
        with pytest.raises(ServicesLoadError) as caught:
            conv_frames.load_services(
                [emu.service_sids[0], unknown, emu.service_sids[1]], **options(emu)
            )

    error = caught.value
    assert list(error.frames) == [emu.service_sids[0], emu.service_sids[1]]
    assert [len(frame) for frame in error.frames.values()] == [120, 30]
    assert list(error.errors) == [unknown]
    assert isinstance(error.errors[unknown], conv_frames.APIError)
    assert error.errors[unknown].status == 404  # type: ignore[attr-defined]
    assert "1 of 3 services failed" in str(error)
    assert unknown in str(error)
    assert emu.auth_token not in str(error)


@pytest.mark.parametrize(
    ("sids", "workers", "message"),
    [
        (["IS123"], 4, "not a Conversations service SID"),
        ([], 0, "max_workers=0"),
        ([], True, "max_workers=True"),
    ],
)
def test_load_services_checks_its_arguments_before_any_request(
    sids: list[str], workers: Any, message: str
) -> None:
    with Emulator(users=[10]) as emu:
        with pytest.raises(ConfigurationError, match=message):
            conv_frames.load_services(sids, max_workers=workers, **options(emu))
        assert emu.requests == []


def test_a_service_given_twice_is_loaded_once() -> None:
    with Emulator(users=[60]) as emu:
        frames = conv_frames.load_services([emu.service_sid] * 3, **options(emu))
        assert len(emu.requests) == 2

    assert list(frames) == [emu.service_sid]


class _DictSubclass(dict[str, Any]):
    """Not exactly a dict: the one-pass path leaves such records to the columns."""


def _decoded_or_none(text: str | None) -> Any:
    try:
        return None if text is None else orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def test_a_failed_answer_to_a_request_sent_ahead_leaves_its_connection_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk must not close a connection get_json already gave back.

    Another thread of the same Client may be using it by then (#4 review).
    """
    missing = Step(404, json=twilio_error(404, 20404, "Not found"))
    steps = [*chained(2), missing, *chained(2)]
    steps[0].json["meta"]["next_page_url"] = f"{{BASE}}{LISTING}?Page=1"
    steps[1].json["meta"]["next_page_url"] = f"{{BASE}}{LISTING}?Page=9"
    opened = count_connections(monkeypatch)
    with ScriptedServer(steps) as server:
        with conv_frames.Client(
            account_sid=CREDENTIALS.account_sid,
            auth_token="token",
            base_url=server.base_url,
            max_attempts=1,
        ) as client:
            with pytest.raises(conv_frames.APIError, match="Not found"):
                client.load_users("IS" + "5e" * 16, page_size=2)
            frame = client.load_users("IS" + "5e" * 16, page_size=2)

    assert len(frame) == 2
    assert len(opened) == 1


@pytest.mark.parametrize("token", ["a b", "\u00e9t\u00e9", "a\x01b"])
def test_a_next_link_is_sent_percent_encoded_as_requests_sends_it(token: str) -> None:
    steps = chained(2)
    steps[0].json["meta"]["next_page_url"] = (
        f"{{BASE}}{LISTING}?Page=1&PageToken={token}"
    )
    with ScriptedServer(steps) as server:
        users = [page[0]["sid"] for page in walk_ahead(server, LoadStats())]

    assert users == [user_record(1)["sid"], user_record(2)["sid"]]
    assert server.requests[1].query == {"Page": "1", "PageToken": token}


# --- TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def https_server(authority: trustme.CA, host: str) -> ScriptedServer:
    """A two-page listing over TLS, with a certificate ``authority`` issued."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(context)
    return ScriptedServer(chained(2), tls=context)


def https_load(
    server: ScriptedServer, session: requests.Session | None = None
) -> pd.DataFrame:
    return conv_frames.load_users(
        "IS" + "5e" * 16,
        account_sid=CREDENTIALS.account_sid,
        auth_token="token",
        base_url=server.base_url,
        session=session,
        max_attempts=3,
    )


@pytest.mark.parametrize("lane", ["own", "requests"])
def test_a_load_over_tls_trusts_the_ca_bundle_requests_would(
    lane: str,
    authority: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with https_server(authority, "127.0.0.1") as server:
        with requests.Session() as session:
            frame = https_load(server, session if lane == "requests" else None)

    assert server.base_url.startswith("https://")
    assert list(frame["sid"]) == [user_record(1)["sid"], user_record(2)["sid"]]


@pytest.mark.parametrize(
    ("issued_for", "trusted", "reason"),
    [
        ("127.0.0.1", False, "unable to get local issuer certificate"),
        ("api.example.org", True, "certificate is not valid for '127.0.0.1')"),
    ],
    ids=["unknown authority", "another host"],
)
def test_a_refused_certificate_is_one_clear_error_in_both_lanes(
    issued_for: str,
    trusted: bool,
    reason: str,
    authority: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if trusted:
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    errors = []
    for lane in ("own", "requests"):
        with https_server(authority, issued_for) as server:
            with requests.Session() as session:
                with pytest.raises(TransportError) as caught:
                    https_load(server, session if lane == "requests" else None)
        errors.append(caught.value)
        assert server.requests == []  # no request got through

    fast, slow = errors
    assert str(fast).replace(*ports(fast, slow)) == str(slow)
    assert fast.attempts == 1  # not retried: the same certificate comes back
    assert "the server's TLS certificate was refused (" in str(fast)
    assert reason in str(fast)
    assert "set REQUESTS_CA_BUNDLE" in str(fast)
