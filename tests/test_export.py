"""Streaming export: same data as the in-memory path, page by page, all or nothing."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal
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
from conv_frames import APIError, TransportError
from conv_frames._transport import CancelEvent

OPTIONS: dict[str, Any] = {
    "account_sid": ACCOUNT_SID,
    "auth_token": AUTH_TOKEN,
    "page_size": 2,
    "max_attempts": 2,
    "sleep": lambda _: None,
}

CLIENT_OPTIONS = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}


def chain(pages: list[list[dict[str, Any]]]) -> list[Step]:
    """A page per list of records, each linking to the next."""
    steps = []
    for number, records in enumerate(pages):
        link = None
        if number + 1 < len(pages):
            query = f"PageSize=2&Page={number + 1}&PageToken=PT{number + 1}"
            link = f"{{BASE}}{USERS_PATH}?{query}"
        body = users_page(records, page=number, next_page_url=link)
        steps.append(Step(json=body))
    return steps


PAGES = [
    [user_record(1), user_record(2, friendly_name="Zoë 李")],
    [user_record(3, attributes='{"team": {"name": "blue"}}'), user_record(4)],
    [user_record(5, date_created="2021-06-01T08:00:00.250-07:00")],
]


def test_streaming_export_equals_the_in_memory_load(tmp_path: Path) -> None:
    streamed, loaded = tmp_path / "streamed.parquet", tmp_path / "loaded.parquet"
    with ScriptedServer(chain(PAGES)) as server:
        attrs = conv_frames.export_users(
            SERVICE_SID, streamed, base_url=server.base_url, **OPTIONS
        )
    with ScriptedServer(chain(PAGES)) as server:
        frame = conv_frames.load_users(
            SERVICE_SID, base_url=server.base_url, parquet_path=loaded, **OPTIONS
        )

    assert attrs["rows"] == 5
    assert attrs["pages"] == 3
    assert pq.read_table(streamed).equals(pq.read_table(loaded))
    assert_frame_equal(conv_frames.read_parquet(streamed), frame)
    assert_frame_equal(conv_frames.read_parquet(loaded), frame)
    # Pages are gathered into row groups of ROW_GROUP_ROWS users, not one a page.
    assert pq.ParquetFile(streamed).metadata.num_row_groups == 1


def test_pages_are_gathered_into_row_groups_of_the_given_size(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    with (
        ScriptedServer(chain(PAGES)) as server,
        conv_frames.Client(
            base_url=server.base_url,
            **{k: v for k, v in OPTIONS.items() if k != "page_size"},
        ) as client,
    ):
        client.export_users(SERVICE_SID, path, page_size=2, row_group_rows=3)

    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    # Groups hold exactly row_group_rows users, whatever the pages' sizes.
    assert sizes == [3, 2]


def test_a_field_that_appears_on_a_later_page_is_kept_in_the_stream(
    tmp_path: Path,
) -> None:
    pages = [
        [user_record(1), user_record(2)],
        [user_record(3, tier=7)],
        [user_record(4, tier="gold")],
    ]
    path = tmp_path / "users.parquet"
    with ScriptedServer(chain(pages)) as server:
        conv_frames.export_users(SERVICE_SID, path, base_url=server.base_url, **OPTIONS)
    with ScriptedServer(chain(pages)) as server:
        frame = conv_frames.load_users(SERVICE_SID, base_url=server.base_url, **OPTIONS)

    back = conv_frames.read_parquet(path)
    assert back["tier"].tolist() == [None, None, "7", '"gold"']
    assert_frame_equal(back, frame)


def test_lenient_attributes_on_a_later_page_are_set_aside_in_their_own_column(
    tmp_path: Path,
) -> None:
    pages = [[user_record(1)], [user_record(2, attributes="{duty: tech")]]
    path = tmp_path / "users.parquet"
    with ScriptedServer(chain(pages)) as server:
        attrs = conv_frames.export_users(
            SERVICE_SID,
            path,
            base_url=server.base_url,
            invalid_attributes="null",
            **OPTIONS,
        )

    assert attrs["invalid_attributes"] == 1
    stored = pq.read_table(path)
    assert stored.column("attributes").to_pylist() == ['{ "duty": "agent" }', None]
    assert stored.column("invalid_attributes_text").to_pylist() == [
        None,
        "{duty: tech",
    ]
    assert conv_frames.read_parquet(path)["attributes"].tolist() == [
        {"duty": "agent"},
        None,
    ]


@pytest.mark.parametrize("function", ["export_users", "load_users"])
def test_a_failure_on_page_3_keeps_the_earlier_file_byte_identical(
    tmp_path: Path, function: str
) -> None:
    path = tmp_path / "users.parquet"
    with ScriptedServer(chain(PAGES)) as server:
        conv_frames.export_users(SERVICE_SID, path, base_url=server.base_url, **OPTIONS)
    before = path.read_bytes()

    failing = Step(500, json=twilio_error(500, 20500, "internal"))
    steps = [*chain(PAGES)[:2], failing, failing]
    with ScriptedServer(steps) as server:
        options = {**OPTIONS, "base_url": server.base_url}
        if function == "export_users":
            run = partial(conv_frames.export_users, SERVICE_SID, path, **options)
        else:
            run = partial(
                conv_frames.load_users, SERVICE_SID, parquet_path=path, **options
            )
        with pytest.raises(APIError, match="20500"):
            run()

    assert len(server.requests) == 4
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


def test_the_overlapped_fetch_stops_at_the_first_error_without_more_requests(
    tmp_path: Path,
) -> None:
    """A bad record on page 2 stops the load; page 3 may be fetched, never page 4."""
    pages = [*PAGES[:1], [user_record(9, is_online="yes")], *PAGES[1:]]
    with ScriptedServer(chain(pages)) as server:
        with pytest.raises(conv_frames.SchemaError, match=r"'is_online' of user US0+9"):
            conv_frames.export_users(
                SERVICE_SID, tmp_path / "u.parquet", base_url=server.base_url, **OPTIONS
            )

    assert len(server.requests) in (2, 3)
    targets = [r.target for r in server.requests]
    assert len(set(targets)) == len(targets)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_service_exports_an_empty_file_with_the_full_schema(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.parquet"
    with ScriptedServer([Step(json=users_page([]))]) as server:
        attrs = conv_frames.export_users(
            SERVICE_SID, path, base_url=server.base_url, **OPTIONS
        )

    assert attrs["rows"] == 0
    assert pq.read_schema(path).names == list(conv_frames.USERS_SCHEMA.names)
    back = conv_frames.read_parquet(path)
    assert back.empty
    assert back.attrs == attrs


def test_a_failed_page_does_not_wait_for_the_prefetched_pages_retries() -> None:
    """Page 0 is bad while page 1 is in a long Retry-After: fail at once."""
    link = f"{{BASE}}{USERS_PATH}?PageSize=2&Page=1&PageToken=PT1"
    bad = users_page([user_record(1, is_online="yes")], next_page_url=link)
    busy = Step(
        429, json=twilio_error(429, 20429, "Too Many"), headers={"Retry-After": "20"}
    )
    options = {k: v for k, v in OPTIONS.items() if k != "sleep"}  # real waits
    options["max_attempts"] = 3
    with ScriptedServer([Step(json=bad)], default=busy) as server:
        started = time.monotonic()
        with pytest.raises(conv_frames.SchemaError, match="is_online"):
            conv_frames.load_users(SERVICE_SID, base_url=server.base_url, **options)
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # would a retry still come?

    assert elapsed < 5
    assert len(server.requests) <= 2


def test_cancelling_an_export_ends_the_request_a_server_stalls(tmp_path: Path) -> None:
    """The stalled read is cut when the event is set, not waited out (30 s)."""
    path = tmp_path / "users.parquet"
    steps = chain(PAGES)
    steps[1].delay_s = 30.0  # page 1 stalls past anything the test waits
    cancel = CancelEvent()
    with ScriptedServer(steps) as server:
        client = conv_frames.Client(
            base_url=server.base_url, timeout=(5.0, 30.0), **CLIENT_OPTIONS
        )

        def cancel_once_stalled() -> None:
            deadline = time.monotonic() + 10
            while len(server.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # page 1's request is now read by nobody
            cancel.set()

        canceller = threading.Thread(target=cancel_once_stalled)
        canceller.start()
        started = time.monotonic()
        with client, pytest.raises(TransportError, match="load abandoned") as caught:
            client.export_users(SERVICE_SID, path, page_size=2, cancel=cancel)
        elapsed = time.monotonic() - started
        canceller.join()

    assert elapsed < 5
    assert caught.value.attempts == 1  # not retried
    assert len(server.requests) == 2
    assert list(tmp_path.iterdir()) == []
