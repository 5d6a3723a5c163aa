"""End to end: the loader against the spec's example and the bundled emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal
from scripted import ACCOUNT_SID, AUTH_TOKEN, ScriptedServer, Step

import conv_frames
from conv_frames.emulator import Emulator

SPEC_EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "spec"
    / "examples"
    / "ListServiceUser.200.readFull.json"
)
EXAMPLE_SERVICE = "IS" + "a" * 32


@pytest.fixture(scope="module")
def emulator() -> Any:
    with Emulator(users=1234, seed=7) as running:
        yield running


def credentials(emulator: Emulator) -> dict[str, str]:
    return {
        "account_sid": emulator.account_sid,
        "auth_token": emulator.auth_token,
        "base_url": emulator.base_url,
    }


def test_the_specs_readfull_example_loads_to_its_two_rows() -> None:
    """Both rows are kept although they share a SID, and every dtype is exact."""
    assert SPEC_EXAMPLE.is_file(), f"the spec's example is missing: {SPEC_EXAMPLE}"
    page = json.loads(SPEC_EXAMPLE.read_text())
    with ScriptedServer([Step(json=page)]) as server:
        frame = conv_frames.load_users(
            EXAMPLE_SERVICE,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )

    expected = pd.DataFrame(
        {
            "sid": pd.array(["US" + "a" * 32] * 2, dtype="string"),
            "account_sid": pd.array(["AC" + "a" * 32] * 2, dtype="string"),
            "chat_service_sid": pd.array([EXAMPLE_SERVICE] * 2, dtype="string"),
            "role_sid": pd.array(["RL" + "a" * 32] * 2, dtype="string"),
            "identity": pd.array(["admin", "agent0034"], dtype="string"),
            "friendly_name": pd.array(["name", "John from customs"], dtype="string"),
            "attributes": pd.Series(
                [{"duty": "tech"}, {"duty": "agent"}], dtype=object
            ),
            "is_online": pd.array([True, False], dtype="boolean"),
            "is_notifiable": pd.array([None, None], dtype="boolean"),
            "date_created": pd.to_datetime(
                ["2019-12-16T22:18:37Z", "2020-03-24T20:38:21Z"]
            ).as_unit("us"),
            "date_updated": pd.to_datetime(
                ["2019-12-16T22:18:38Z", "2020-03-24T20:38:21Z"]
            ).as_unit("us"),
            "url": pd.array([page["users"][0]["url"]] * 2, dtype="string"),
            "links": pd.Series([u["links"] for u in page["users"]], dtype=object),
        }
    )
    assert_frame_equal(frame, expected)
    assert frame.attrs["duplicate_sids"] == 1
    assert frame.attrs["rows"] == 2
    assert server.requests[0].query == {"PageSize": "50"}


def test_1234_users_load_in_25_requests_equal_to_the_emulators_dataset(
    emulator: Emulator,
) -> None:
    before = len(emulator.requests)
    frame = conv_frames.load_users(emulator.service_sid, **credentials(emulator))

    assert len(emulator.requests) - before == 25
    assert frame.attrs["pages"] == 25
    assert frame.attrs["requests"] == 25
    assert frame.attrs["retries"] == 0
    assert_frame_equal(frame, conv_frames.users_frame(emulator.users()))
    assert frame.attrs["service_sid"] == emulator.service_sid
    assert frame.attrs["api_host"] == emulator.base_url.removeprefix("http://")


def test_an_api_key_is_accepted_like_the_auth_token(emulator: Emulator) -> None:
    frame = conv_frames.load_users(
        emulator.service_sid,
        account_sid=emulator.account_sid,
        api_key=emulator.api_key,
        api_secret=emulator.api_secret,
        base_url=emulator.base_url,
        page_size=1000,
    )

    assert len(frame) == 1234
    assert frame.attrs["pages"] == 25


def test_credentials_from_the_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)

    frame = conv_frames.load_users(emulator.service_sid, base_url=emulator.base_url)

    assert len(frame) == 1234


def test_a_wrong_token_is_an_api_error_after_one_request(emulator: Emulator) -> None:
    options = {**credentials(emulator), "auth_token": "not-the-token"}
    with pytest.raises(conv_frames.APIError) as caught:
        conv_frames.load_users(emulator.service_sid, **options)

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert caught.value.attempts == 1
    assert "not-the-token" not in str(caught.value)


def test_pyarrow_backend_holds_the_same_values(emulator: Emulator) -> None:
    frame = conv_frames.load_users(
        emulator.service_sid, dtype_backend="pyarrow", **credentials(emulator)
    )

    assert str(frame.dtypes["sid"]) == "string[pyarrow]"
    assert str(frame.dtypes["date_created"]) == "timestamp[us, tz=UTC][pyarrow]"
    expected = conv_frames.users_frame(emulator.users(), dtype_backend="pyarrow")
    assert_frame_equal(frame, expected)


def test_the_export_reads_back_equal_and_duckdb_sees_the_types(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "users.parquet"
    frame = conv_frames.load_users(
        emulator.service_sid, parquet_path=path, **credentials(emulator)
    )

    back = conv_frames.read_parquet(path)
    assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs
    duck = duckdb.connect()
    duck.read_parquet(str(path)).create_view("users")
    described = duck.execute("DESCRIBE SELECT * FROM users").fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert types["date_created"] == "TIMESTAMP WITH TIME ZONE"
    assert types["is_online"] == "BOOLEAN"
    assert types["sid"] == "VARCHAR"
    assert types["attributes"] == "JSON"
    assert types["links"] == "MAP(VARCHAR, VARCHAR)"
    plans = duck.execute(
        "SELECT attributes->>'plan' AS plan, count(*) FROM users GROUP BY plan"
    ).fetchall()
    assert sum(count for _, count in plans) == 1234


def test_the_demo_command_exits_0_and_prints_the_row_count(tmp_path: Path) -> None:
    output = tmp_path / "demo.parquet"
    done = subprocess.run(  # noqa: S603  # our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "conv_frames",
            "demo",
            "--users",
            "321",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "loaded 321 users in 7 pages" in done.stdout
    assert len(conv_frames.read_parquet(output)) == 321


def test_every_public_name_is_importable_and_documented() -> None:
    for name in conv_frames.__all__:
        value = getattr(conv_frames, name)
        if callable(value):
            assert value.__doc__, f"conv_frames.{name} has no docstring"


def test_an_option_no_one_takes_is_refused_by_name_with_a_way_out(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = emulator.service_sid
    creds = credentials(emulator)
    users = conv_frames.users_frame(emulator.users()[:3])
    presence = (
        "has no option 'presence'; to fetch presence, use load_users(..., "
        "presence=True) or fill_presence(frame)"
    )
    calls = [
        (
            lambda: conv_frames.load_services([service], presence=True, **creds),
            f"load_services() {presence}",
        ),
        (
            lambda: conv_frames.export_users(
                service, tmp_path / "u.parquet", presence=True, **creds
            ),
            f"export_users() {presence}",
        ),
        (
            lambda: conv_frames.fill_presence(users, concurrency=8, **creds),
            "fill_presence() has no option 'concurrency'; did you mean "
            "max_concurrency?",
        ),
        (
            lambda: list(conv_frames.iter_user_pages(service, pagesize=5, **creds)),
            "iter_user_pages() has no option 'pagesize'; did you mean page_size?",
        ),
        (
            lambda: conv_frames.export_snapshots(
                tmp_path / "set", [service], workers=2, **creds
            ),
            "export_snapshots() has no option 'workers'; did you mean max_workers?",
        ),
    ]
    before = len(emulator.requests)

    for call, message in calls:
        with pytest.raises(conv_frames.ConfigurationError) as caught:
            call()
        assert str(caught.value) == message

    assert len(emulator.requests) == before


def test_a_load_hands_arrows_freed_memory_back_once_nothing_holds_its_pages(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool is released after the pages' tables are gone, not while held."""
    pool = pa.default_memory_pool()
    held_at_release: list[int] = []

    class Watched:
        def release_unused(self) -> None:
            held_at_release.append(pa.total_allocated_bytes())
            pool.release_unused()

    monkeypatch.setattr(pa, "default_memory_pool", Watched)
    before = pa.total_allocated_bytes()
    frame = conv_frames.load_users(emulator.service_sid, **credentials(emulator))

    assert len(frame) == 1234
    # By the last release only the frame's own columns were left allocated.
    assert held_at_release[-1] == pa.total_allocated_bytes() > before
