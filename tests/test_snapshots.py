"""Scheduled snapshots: layout, manifests, atomic publish, lock, retention, services."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal
from scripted import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_SID,
    ScriptedServer,
    Step,
    user_record,
    users_page,
)

import conv_frames
import conv_frames._presence
import conv_frames._services
import conv_frames._snapshots
from conv_frames._cli import main
from conv_frames.emulator import Emulator

KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}Z")
UNKNOWN_SERVICE = "IS" + "0" * 32


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(users=[120, 7, 0], seed=11) as running:
        yield running


def options(emulator: Emulator) -> dict[str, Any]:
    return {
        "account_sid": emulator.account_sid,
        "auth_token": emulator.auth_token,
        "base_url": emulator.base_url,
    }


def layout(root: Path) -> dict[str, list[str]]:
    """Snapshot folders under ``root``, with the files in each, sorted."""
    return {
        str(folder.relative_to(root)): sorted(p.name for p in folder.iterdir())
        for folder in sorted(root.glob("service_sid=*/snapshot=*"))
    }


def manifest_of(root: Path, service_sid: str, key: str) -> dict[str, Any]:
    path = root / f"service_sid={service_sid}" / f"snapshot={key}" / "_manifest.json"
    manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    return manifest


def test_a_run_publishes_one_snapshot_per_service_with_its_manifest(
    emulator: Emulator, tmp_path: Path
) -> None:
    root = tmp_path / "users"
    run = conv_frames.export_snapshots(root, all_services=True, **options(emulator))

    assert run.ok
    assert KEY.fullmatch(run.snapshot)
    assert [s.service_sid for s in run.services] == emulator.service_sids
    assert layout(root) == {
        f"service_sid={sid}/snapshot={run.snapshot}": [
            "_manifest.json",
            "part-0.parquet",
        ]
        for sid in emulator.service_sids
    }
    assert list((root / ".staging").iterdir()) == []

    sid = emulator.service_sids[0]
    manifest = manifest_of(root, sid, run.snapshot)
    part = root / f"service_sid={sid}" / f"snapshot={run.snapshot}" / "part-0.parquet"
    assert manifest == run.services[0].manifest
    assert {key: manifest[key] for key in ("rows", "pages", "requests", "retries")} == {
        "rows": 120,
        "pages": 3,
        "requests": 3,
        "retries": 0,
    }
    assert manifest["schema_version"] == 1
    assert manifest["conv_frames_version"] == conv_frames.__version__
    assert manifest["api_host"] == emulator.base_url.removeprefix("http://")
    assert manifest["source"] == f"/v1/Services/{sid}/Users"
    assert manifest["service_sid"] == sid
    assert manifest["account_sid"] == emulator.account_sid
    started = datetime.fromisoformat(manifest["started_at"])
    assert started <= datetime.fromisoformat(manifest["ended_at"])
    assert started.strftime("%Y-%m-%dT%H%M%SZ") <= run.snapshot
    assert manifest["files"] == [
        {
            "path": "part-0.parquet",
            "rows": 120,
            "bytes": part.stat().st_size,
            "sha256": hashlib.sha256(part.read_bytes()).hexdigest(),
        }
    ]
    assert manifest["columns"]["date_created"] == "timestamp[us, tz=UTC]"
    assert manifest["previous_snapshot"] is None
    assert pq.ParquetFile(part).metadata.num_row_groups == 1  # 120 < 16,384 users


def test_pages_are_gathered_into_row_groups_of_the_snapshot_size(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv_frames._parquet, "ROW_GROUP_ROWS", 100)
    sid = emulator.service_sids[0]
    run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))

    part = (
        tmp_path / f"service_sid={sid}" / f"snapshot={run.snapshot}" / "part-0.parquet"
    )
    metadata = pq.ParquetFile(part).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert groups == [100, 20]  # pages of 50, 50 | 20
    assert_frame_equal(
        conv_frames.read_snapshot(tmp_path, sid),
        conv_frames.users_frame(emulator.users(sid)),
    )


def test_a_field_that_appears_late_widens_the_gathered_row_groups(
    tmp_path: Path,
) -> None:
    pages = [
        [user_record(1), user_record(2)],
        [user_record(3, tier=7)],
        [user_record(4), user_record(5, attributes="{not json")],
        [user_record(6, tier="gold")],
    ]
    steps = []
    for number, records in enumerate(pages):
        link = None
        if number + 1 < len(pages):
            link = f"{{BASE}}/v1/Services/{SERVICE_SID}/Users?Page={number + 1}"
        steps.append(Step(json=users_page(records, page=number, next_page_url=link)))
    path = tmp_path / "users.parquet"
    with (
        ScriptedServer(steps) as server,
        conv_frames.Client(
            account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, base_url=server.base_url
        ) as client,
    ):
        attrs = client.export_users(
            SERVICE_SID, path, invalid_attributes="null", row_group_rows=3
        )

    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert groups == [3, 3]
    back = conv_frames.read_parquet(path)
    assert back["sid"].tolist() == [f"US{n:032x}" for n in range(1, 7)]
    assert back["tier"].tolist() == [None, None, "7", None, None, '"gold"']
    assert back["attributes"].tolist()[3:5] == [{"duty": "agent"}, None]
    assert attrs["rows"] == 6


def test_read_snapshot_returns_the_frame_load_users_returns(
    emulator: Emulator, tmp_path: Path
) -> None:
    sid = emulator.service_sids[0]
    run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))
    loaded = conv_frames.load_users(sid, **options(emulator))

    for backend in ("numpy_nullable", "pyarrow"):
        back = conv_frames.read_snapshot(tmp_path, sid, dtype_backend=backend)
        expected = conv_frames.users_frame(emulator.users(sid), dtype_backend=backend)
        assert_frame_equal(back, expected)
    back = conv_frames.read_snapshot(tmp_path)  # the only service, the latest
    assert_frame_equal(back, loaded)
    assert back.attrs["snapshot"] == run.snapshot
    assert back.attrs["rows"] == 120
    assert back.attrs["service_sid"] == sid


def test_keys_are_unique_and_ordered_and_previous_reads_the_one_before(
    emulator: Emulator, tmp_path: Path
) -> None:
    sid = emulator.service_sids[1]
    keys = [
        conv_frames.export_snapshots(tmp_path, [sid], **options(emulator)).snapshot
        for _ in range(3)
    ]

    assert keys == sorted(set(keys))
    previous = conv_frames.read_snapshot(tmp_path, sid, "previous")
    assert previous.attrs["snapshot"] == keys[1]
    oldest = conv_frames.read_snapshot(tmp_path, sid, keys[0])
    assert oldest.attrs["snapshot"] == keys[0]
    listed = conv_frames.list_snapshots(tmp_path)
    assert listed["snapshot"].tolist() == keys
    assert listed["rows"].tolist() == [7, 7, 7]
    assert str(listed["started_at"].dtype) == "datetime64[us, UTC]"
    manifest = manifest_of(tmp_path, sid, keys[2])
    assert manifest["previous_snapshot"] == keys[1]
    assert manifest["column_changes"] == []

    with pytest.raises(conv_frames.SnapshotError, match="no published snapshot"):
        conv_frames.read_snapshot(tmp_path, sid, "2001-01-01T000000Z")
    with pytest.raises(conv_frames.ConfigurationError, match="neither 'latest'"):
        conv_frames.read_snapshot(tmp_path, sid, "yesterday")


def test_a_failed_run_leaves_earlier_snapshots_byte_identical(
    emulator: Emulator, tmp_path: Path
) -> None:
    sid = emulator.service_sids[0]
    first = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    # Two pages are written to the staging folder, then the third is refused.
    run = conv_frames.export_snapshots(
        tmp_path, [sid], max_pages=2, **options(emulator)
    )

    assert not run.ok
    assert isinstance(run.services[0].error, conv_frames.PaginationError)
    assert run.services[0].path is None
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert list(layout(tmp_path)) == [f"service_sid={sid}/snapshot={first.snapshot}"]
    assert list((tmp_path / ".staging").iterdir()) == []
    with pytest.raises(conv_frames.PaginationError):
        run.raise_for_failures()


def test_a_snapshot_without_a_manifest_is_invisible_to_readers(
    emulator: Emulator, tmp_path: Path
) -> None:
    sid = emulator.service_sids[1]
    run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))
    published = tmp_path / f"service_sid={sid}" / f"snapshot={run.snapshot}"
    unfinished = published.with_name("snapshot=2099-01-01T000000Z")
    unfinished.mkdir()
    (unfinished / "part-0.parquet").write_bytes(
        (published / "part-0.parquet").read_bytes()
    )

    assert conv_frames.read_snapshot(tmp_path, sid).attrs["snapshot"] == run.snapshot
    assert conv_frames.list_snapshots(tmp_path)["snapshot"].tolist() == [run.snapshot]


def test_a_file_that_differs_from_its_manifest_is_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    sid = emulator.service_sids[1]
    run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))
    part = (
        tmp_path / f"service_sid={sid}" / f"snapshot={run.snapshot}" / "part-0.parquet"
    )
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))

    with pytest.raises(conv_frames.SnapshotError, match="SHA-256 differs"):
        conv_frames.read_snapshot(tmp_path, sid)


def test_retention_keeps_the_newest_n_snapshots_of_each_service(
    emulator: Emulator, tmp_path: Path
) -> None:
    sids = emulator.service_sids[1:]
    keys = [
        conv_frames.export_snapshots(
            tmp_path, sids, keep=2, **options(emulator)
        ).snapshot
        for _ in range(4)
    ]

    assert sorted(layout(tmp_path)) == sorted(
        f"service_sid={sid}/snapshot={key}" for sid in sids for key in keys[2:]
    )
    assert list((tmp_path / ".staging").iterdir()) == []


def test_services_named_listed_and_default_are_each_exported_once(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = emulator.service_sids
    caplog.set_level(logging.INFO, "conv_frames")
    run = conv_frames.export_snapshots(
        tmp_path,
        [third, third],
        all_services=True,
        default_service=True,
        **options(emulator),
    )

    assert [(s.service_sid, s.source) for s in run.services] == [
        (third, f"/v1/Services/{third}/Users"),
        (first, f"/v1/Services/{first}/Users"),
        (second, f"/v1/Services/{second}/Users"),
    ]
    assert f"the default service {first} is selected already" in caplog.text


def test_the_default_service_is_read_through_v1_users(tmp_path: Path) -> None:
    with Emulator(users=[60, 3], seed=5) as emulator:
        run = conv_frames.export_snapshots(
            tmp_path, default_service=True, **options(emulator)
        )
        paths = [request.path for request in emulator.requests]

    (service,) = run.services
    assert (service.service_sid, service.source) == (emulator.service_sid, "/v1/Users")
    # The configuration names the default service, then its two pages.
    assert paths == ["/v1/Configuration", "/v1/Users", "/v1/Users"]
    frame = conv_frames.read_snapshot(tmp_path, emulator.service_sid)
    assert len(frame) == 60
    assert frame.attrs["service_sid"] == emulator.service_sid
    assert frame["url"].str.contains("/v1/Users/US").all()
    assert frame["chat_service_sid"].eq(emulator.service_sid).all()


def test_an_empty_default_service_is_an_empty_snapshot_with_every_column(
    tmp_path: Path,
) -> None:
    with Emulator(users=[0, 4], seed=5) as empty_default:
        run = conv_frames.export_snapshots(
            tmp_path,
            [empty_default.service_sids[1]],
            default_service=True,
            **options(empty_default),
        )
        default_sid = empty_default.service_sid

    assert run.ok
    assert [(s.service_sid, s.source) for s in run.services][1] == (
        default_sid,
        "/v1/Users",
    )
    manifest = manifest_of(tmp_path, default_sid, run.snapshot)
    assert (manifest["rows"], manifest["pages"], manifest["files"][0]["rows"]) == (
        0,
        1,
        0,
    )
    part = tmp_path / f"service_sid={default_sid}" / f"snapshot={run.snapshot}"
    schema = pq.read_schema(part / "part-0.parquet")
    assert schema.remove_metadata() == conv_frames.USERS_SCHEMA.remove_metadata()
    frame = conv_frames.read_snapshot(tmp_path, default_sid)
    assert_frame_equal(frame, conv_frames.users_frame([]))
    assert frame.attrs["service_sid"] == default_sid
    assert frame.attrs["rows"] == 0


@pytest.mark.parametrize(
    ("configuration", "error", "message"),
    [
        (
            {"default_chat_service_sid": None},
            conv_frames.ConfigurationError,
            "the account has no default Conversations service",
        ),
        (
            {"default_chat_service_sid": "MG" + "1" * 32},
            conv_frames.SchemaError,
            "default_chat_service_sid of 'MG111",
        ),
        ({"account_sid": ACCOUNT_SID}, conv_frames.SchemaError, "without a default"),
    ],
    ids=["none", "not-a-service", "missing"],
)
def test_a_configuration_without_a_default_service_fails_that_entry_alone(
    tmp_path: Path,
    configuration: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    steps = [Step(json=configuration), Step(json=users_page([user_record(1)]))]
    with ScriptedServer(steps) as server:
        run = conv_frames.export_snapshots(
            tmp_path,
            [SERVICE_SID],
            default_service=True,
            max_workers=1,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )

    assert [s.ok for s in run.services] == [True, False]
    failed = run.services[1]
    assert (failed.service_sid, failed.source) == (None, "/v1/Configuration")
    assert isinstance(failed.error, error)
    assert message in str(failed.error)


def test_one_failing_service_does_not_discard_the_others(
    emulator: Emulator, tmp_path: Path
) -> None:
    first, second, _ = emulator.service_sids
    run = conv_frames.export_snapshots(
        tmp_path, [first, UNKNOWN_SERVICE, second], **options(emulator)
    )

    assert [s.ok for s in run.services] == [True, False, True]
    error = run.services[1].error
    assert isinstance(error, conv_frames.APIError)
    assert error.status == 404
    assert sorted(layout(tmp_path)) == sorted(
        f"service_sid={sid}/snapshot={run.snapshot}" for sid in (first, second)
    )
    assert [s.service_sid for s in run.failed] == [UNKNOWN_SERVICE]


def test_services_load_concurrently_within_the_bound(tmp_path: Path) -> None:
    # Each request takes 0.2 s; the server refuses a third request in flight.
    with Emulator(
        users=[3, 3, 3, 3, 3], seed=2, latency=0.2, max_concurrency=2
    ) as emulator:
        run = conv_frames.export_snapshots(
            tmp_path, emulator.service_sids, max_workers=2, **options(emulator)
        )
        statuses = {request.status for request in emulator.requests}

    assert run.ok
    assert statuses == {200}
    spans = [
        (
            datetime.fromisoformat(s.manifest["started_at"]),
            datetime.fromisoformat(s.manifest["ended_at"]),
        )
        for s in run.services
        if s.manifest is not None
    ]
    in_flight = [sum(a <= start < b for a, b in spans) for start, _ in spans]
    assert max(in_flight) == 2


def test_users_of_another_service_are_refused_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    stray = user_record(2, chat_service_sid="IS" + "b" * 32)
    with ScriptedServer([Step(json=users_page([user_record(1), stray]))]) as server:
        run = conv_frames.export_snapshots(
            tmp_path,
            [SERVICE_SID],
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )

    error = run.services[0].error
    assert isinstance(error, conv_frames.SchemaError)
    assert "chat_service_sid is ISbbbbbbbb" in str(error)
    assert layout(tmp_path) == {}


def test_a_new_column_is_reported_against_the_previous_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = []
    for records in ([user_record(1)], [user_record(1, tier=3)]):
        with ScriptedServer([Step(json=users_page(records))]) as server:
            runs.append(
                conv_frames.export_snapshots(
                    tmp_path,
                    [SERVICE_SID],
                    account_sid=ACCOUNT_SID,
                    auth_token=AUTH_TOKEN,
                    base_url=server.base_url,
                )
            )

    manifest = runs[1].services[0].manifest
    assert manifest is not None
    assert manifest["previous_snapshot"] == runs[0].snapshot
    assert manifest["column_changes"] == ["+tier (int64)"]
    assert (
        f"the columns of service {SERVICE_SID} changed since snapshot "
        f"{runs[0].snapshot}: +tier (int64)"
    ) in caplog.text


LOCK_HOLDER = """
import sys, time
from conv_frames._dataset import Dataset
with Dataset.open(sys.argv[1], create=True).lock(0):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def lock_held_elsewhere(root: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """A separate process that holds the dataset's lock for ``seconds``."""
    with subprocess.Popen(  # noqa: S603  # our interpreter, our script
        [sys.executable, "-c", LOCK_HOLDER, str(root), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        try:
            yield holder
        finally:
            holder.kill()


def test_a_held_lock_stops_the_next_run_until_its_holder_is_killed(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = emulator.service_sids[1]
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    with lock_held_elsewhere(tmp_path, 60) as holder:
        sent = len(emulator.requests)
        with pytest.raises(conv_frames.DatasetLockedError) as refused:
            conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))
        # The holder is named: process, host and since when.
        assert re.fullmatch(
            f"another conv-frames run is writing to {re.escape(str(tmp_path))} "
            f"\\(pid {holder.pid} on {re.escape(socket.gethostname())} since "
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, which holds "
            f"{re.escape(str(tmp_path / '.conv-frames.lock'))}\\); nothing was "
            r"exported\. Let it finish, or wait for it with lock_timeout "
            r"\(--wait SECONDS\)",
            str(refused.value),
        )
        argv = ["export", sid, "--dataset", str(tmp_path)]
        code = main([*argv, "--base-url", emulator.base_url])
        assert len(emulator.requests) == sent
        holder.kill()  # as a crash would: the OS releases the lock
        holder.wait()
        run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))

    assert code == 8
    err = capsys.readouterr().err
    assert "DatasetLockedError: another conv-frames run is writing to" in err
    assert "--wait SECONDS" in err
    assert run.ok
    assert list(layout(tmp_path)) == [f"service_sid={sid}/snapshot={run.snapshot}"]


def test_a_second_run_with_wait_queues_behind_the_first(
    emulator: Emulator, tmp_path: Path
) -> None:
    with lock_held_elsewhere(tmp_path, 0.5) as holder:
        started = time.perf_counter()
        run = conv_frames.export_snapshots(
            tmp_path, [emulator.service_sids[1]], lock_timeout=30, **options(emulator)
        )
        waited = time.perf_counter() - started
        assert holder.wait() == 0  # it ended by itself, releasing the lock

    assert run.ok
    assert waited >= 0.3


KILLED_EXPORT = """
import sys
import conv_frames
conv_frames.export_snapshots(
    sys.argv[1], [sys.argv[2]], base_url=sys.argv[3], page_size=10
)
"""


def test_a_killed_run_publishes_nothing_and_the_next_run_cleans_up(
    tmp_path: Path,
) -> None:
    with Emulator(users=[400], seed=3, latency=0.05, page_size_cap=10) as emulator:
        sid = emulator.service_sid
        environment = {
            **os.environ,
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
        }
        exporter = subprocess.Popen(  # noqa: S603  # our interpreter, our script
            [
                sys.executable,
                "-c",
                KILLED_EXPORT,
                str(tmp_path),
                sid,
                emulator.base_url,
            ],
            env=environment,
        )
        deadline = time.monotonic() + 30
        while len(emulator.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        exporter.send_signal(signal.SIGKILL)
        exporter.wait()
        leftovers = list((tmp_path / ".staging").iterdir())

        run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))

    assert len(leftovers) == 1  # the killed run's staging folder, unpublished
    assert run.ok
    assert list(layout(tmp_path)) == [f"service_sid={sid}/snapshot={run.snapshot}"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_the_export_command_writes_a_dataset_and_reports_each_service(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    first, second, _ = emulator.service_sids
    argv = ["export", "--dataset", str(tmp_path), "--base-url", emulator.base_url]

    code = main([*argv, "--service", first, "--service", UNKNOWN_SERVICE])
    out, err = capsys.readouterr()
    assert code == 3  # the first failure's code: the API refused (404)
    (line,) = out.splitlines()
    assert re.fullmatch(
        rf"exported 120 users of {first} to {re.escape(str(tmp_path))}/service_sid="
        rf"{first}/snapshot={KEY.pattern}: 3 pages, 0 retries, \d+\.\d\d s",
        line,
    )
    assert err.splitlines()[-1].startswith(
        f"conv-frames: {UNKNOWN_SERVICE}: APIError: HTTP 404 (Twilio error 20404)"
    )

    assert main([*argv, "--all-services", "--keep", "1"]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 3
    assert len(layout(tmp_path)) == 3
    assert main([*argv, "--default-service", "--max-workers", "1"]) == 0
    assert f"exported 120 users of {first}" in capsys.readouterr().out
    assert second in conv_frames.list_snapshots(tmp_path)["service_sid"].tolist()


@pytest.mark.parametrize(
    "extra",
    [["--all-services"], ["--service", UNKNOWN_SERVICE], ["--keep", "3"], []],
    ids=["all-services", "two-services", "keep", "no-service"],
)
def test_output_exports_one_service_and_refuses_dataset_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    service = [SERVICE_SID] if extra != [] else []
    output = str(tmp_path / "users.parquet")
    code = main(["export", *service, "--output", output, *extra])

    assert code == 2
    assert "--output writes one service to one file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


CREDENTIALS: dict[str, Any] = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({**CREDENTIALS}, "no service selected"),
        ({"service_sids": ["IS-nope"], **CREDENTIALS}, "is not a Conversations"),
        ({"service_sids": [SERVICE_SID], "keep": 0, **CREDENTIALS}, "keep=0 must"),
        ({"service_sids": [SERVICE_SID], "max_workers": 0}, "max_workers=0 must"),
        ({"service_sids": [SERVICE_SID], "lock_timeout": -1}, "lock_timeout=-1"),
        ({"service_sids": [SERVICE_SID]}, "no Twilio credentials found"),
    ],
    ids=["nothing", "bad-sid", "keep", "workers", "lock-timeout", "credentials"],
)
def test_bad_arguments_are_refused_before_the_dataset_is_touched(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    root = tmp_path / "users"
    with pytest.raises(conv_frames.ConfigurationError, match=message):
        conv_frames.export_snapshots(root, **arguments)

    assert not root.exists()


def test_a_root_whose_parent_is_missing_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "missing" / "users"
    with pytest.raises(conv_frames.ConfigurationError, match="create it first"):
        conv_frames.export_snapshots(root, [SERVICE_SID], **CREDENTIALS)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("root", ["", "   "])
def test_an_empty_root_is_refused_rather_than_the_working_folder(root: str) -> None:
    """An unset $ROOT in a crontab must not write into $HOME."""
    with pytest.raises(
        conv_frames.ConfigurationError, match=r"dataset root .* is empty"
    ):
        conv_frames.export_snapshots(
            root, ["IS" + "0" * 32], account_sid="AC" + "0" * 32, auth_token="t"
        )


def test_the_next_local_run_removes_a_snapshot_folder_without_a_manifest(
    emulator: Emulator, tmp_path: Path
) -> None:
    """One copied in by hand would trip readers' globs and skew snapshot keys."""
    sid = emulator.service_sids[1]
    stray = tmp_path / f"service_sid={sid}" / "snapshot=2099-01-01T000000Z"
    stray.mkdir(parents=True)
    (stray / "part-0.parquet").write_bytes(b"junk")

    run = conv_frames.export_snapshots(tmp_path, [sid], **options(emulator))

    assert not stray.exists()
    assert not run.snapshot.startswith("2099")
    assert list(layout(tmp_path)) == [f"service_sid={sid}/snapshot={run.snapshot}"]


ENTRY_POINTS: dict[str, Any] = {
    "export": lambda root: conv_frames.export_snapshots(
        root, [SERVICE_SID], **CREDENTIALS
    ),
    "list": conv_frames.list_snapshots,
    "read": lambda root: conv_frames.read_snapshot(root, SERVICE_SID),
    "diff": lambda root: conv_frames.diff_snapshots(root, SERVICE_SID),
}


@pytest.mark.parametrize("entry", ["list", "read", "diff"])
def test_reading_a_root_where_nothing_is_says_there_is_no_dataset(
    tmp_path: Path, entry: str
) -> None:
    root = tmp_path / "users"
    with pytest.raises(conv_frames.SnapshotError) as caught:
        ENTRY_POINTS[entry](root)

    assert str(caught.value) == (
        f"no dataset at {root}: nothing is there. Check the path (and the storage "
        "options of an object store), or export to it first (conv-frames export "
        f"--dataset {root} ...)"
    )
    assert not root.exists()


@pytest.mark.parametrize(
    ("entry", "under_the_file"),
    [*((entry, False) for entry in ENTRY_POINTS), ("export", True)],
    ids=[*ENTRY_POINTS, "export-under-a-file"],
)
def test_a_root_that_is_a_file_is_refused_as_a_file(
    tmp_path: Path, entry: str, under_the_file: bool
) -> None:
    file = tmp_path / "users.parquet"
    file.write_bytes(b"PAR1")
    root = file / "users" if under_the_file else file

    with pytest.raises(conv_frames.ConfigurationError) as caught:
        ENTRY_POINTS[entry](root)

    assert str(caught.value) == (
        f"{file} is a file, not a folder; pass a folder for the dataset"
    )
    assert file.read_bytes() == b"PAR1"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["export", SERVICE_SID, "--dataset", "{file}"], 2, "is a file, not a folder"),
        (["diff", "--dataset", "{file}"], 2, "is a file, not a folder"),
        (["diff", "--dataset", "{missing}"], 1, "SnapshotError: no dataset at"),
        (["export", SERVICE_SID, "--dataset", "{missing}/users"], 2, "create it"),
    ],
    ids=["export-file", "diff-file", "diff-missing", "export-no-parent"],
)
def test_the_command_line_gives_one_line_and_the_code_for_a_bad_root(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    file = tmp_path / "users.parquet"
    file.write_bytes(b"PAR1")
    places = {"file": str(file), "missing": str(tmp_path / "missing")}

    assert main([arg.format(**places) for arg in argv]) == code
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("conv-frames: ")
    assert message in line


def copy_snapshot(root: Path, service_sid: str, key: str, name: str) -> Path:
    """Copy a published snapshot folder to ``snapshot=<name>``, as by hand."""
    published = root / f"service_sid={service_sid}" / f"snapshot={key}"
    copy = published.with_name(f"snapshot={name}")
    copy.mkdir()
    for file in published.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    return copy


def test_a_folder_whose_name_is_no_key_is_ignored_with_a_warning_and_kept(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = emulator.service_sids[1], emulator.service_sids[2]
    run = conv_frames.export_snapshots(tmp_path, [first], **options(emulator))
    stray = copy_snapshot(tmp_path, first, run.snapshot, "2026-13-45T999999Z")

    with caplog.at_level(logging.WARNING, logger="conv_frames"):
        later = conv_frames.export_snapshots(
            tmp_path, [first, second], keep=1, **options(emulator)
        )

    assert later.ok
    assert later.snapshot > run.snapshot
    assert stray.is_dir()  # never removed, by the sweep or by retention
    assert sorted(layout(tmp_path)) == sorted(
        [
            f"service_sid={first}/snapshot=2026-13-45T999999Z",
            f"service_sid={first}/snapshot={later.snapshot}",
            f"service_sid={second}/snapshot={later.snapshot}",
        ]
    )
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.message]
    assert ignored == [
        f"ignoring {tmp_path}/service_sid={first}/snapshot=2026-13-45T999999Z: its "
        "name is not a snapshot key such as snapshot=2026-12-04T020000Z (a UTC "
        "time); rename or remove it"
    ]
    listed = conv_frames.list_snapshots(tmp_path)
    assert listed["snapshot"].tolist() == [later.snapshot, later.snapshot]
    latest = conv_frames.read_snapshot(tmp_path, first)
    assert latest.attrs["snapshot"] == later.snapshot
    diff = conv_frames.diff_snapshots(tmp_path, first, later.snapshot, "latest")
    assert diff.summary.endswith("0 added, 0 removed, 0 changed, 7 unchanged")


def test_a_key_ahead_of_the_clock_fails_its_service_and_keeps_run_times(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = emulator.service_sids[1], emulator.service_sids[2]
    run = conv_frames.export_snapshots(tmp_path, [first], **options(emulator))
    copy_snapshot(tmp_path, first, run.snapshot, "9999-12-31T235959Z")

    with caplog.at_level(logging.WARNING, logger="conv_frames"):
        later = conv_frames.export_snapshots(
            tmp_path, [first, second], **options(emulator)
        )

    # The run's key is its start time, not one second past the stray key.
    assert run.snapshot < later.snapshot < "2100"
    refused, published = later.services
    assert isinstance(refused.error, conv_frames.ExportError)
    assert str(refused.error) == (
        f"{tmp_path}/service_sid={first} holds snapshot=9999-12-31T235959Z, later "
        f"than this run's start ({later.snapshot}), so a new snapshot would not be "
        "its latest; check the clocks of the hosts that export here (NTP), then "
        "rename or remove that folder. Nothing was exported for this service"
    )
    assert published.ok
    assert (
        published.path == f"{tmp_path}/service_sid={second}/snapshot={later.snapshot}"
    )
    assert any(
        "snapshot keys later than this host's clock" in r.message
        and "9999-12-31T235959Z" in r.message
        for r in caplog.records
    )


def test_services_share_one_limit_and_slow_down_rather_than_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#6: four workers against an account that takes one request at a time."""
    limits: list[conv_frames._services.AdaptiveLimit] = []

    def recorded(*args: Any, **kwargs: Any) -> conv_frames._services.AdaptiveLimit:
        limits.append(conv_frames._presence.AdaptiveLimit(*args, **kwargs))
        return limits[-1]

    monkeypatch.setattr(conv_frames._services, "AdaptiveLimit", recorded)
    waits: list[float] = []
    with Emulator(
        users=[60, 60, 60, 60, 60, 60], seed=5, latency=0.01, max_concurrency=1
    ) as emulator:
        run = conv_frames.export_snapshots(
            tmp_path,
            emulator.service_sids,
            max_workers=4,
            sleep=waits.append,
            **options(emulator),
        )
        statuses = [request.status for request in emulator.requests]

    assert run.ok
    assert [s.manifest["rows"] for s in run.services if s.manifest] == [60] * 6
    (limit,) = limits
    refused = statuses.count(429)
    assert statuses.count(200) == 6 * 2
    assert limit.pushbacks == refused == len(waits)
    assert refused > 0  # the account pushed back, and no service failed for it
    assert limit.in_flight == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--wait", "nan"], "--wait nan must be a finite number of seconds >= 0"),
        (["--wait", "inf"], "--wait inf must be a finite number of seconds >= 0"),
        (["--wait", "-1"], "--wait -1.0 must be a finite number of seconds >= 0"),
        (["--keep", "0"], "--keep 0 must be an integer >= 1"),
        (["--max-workers", "0"], "--max-workers 0 must be an integer >= 1"),
        (["--max-pages", "-1"], "--max-pages -1 must be an integer >= 1"),
        (["--page-size", "0"], "--page-size 0 is out of range"),
    ],
)
def test_bad_flags_are_refused_by_their_name_before_the_lock_is_taken(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    root = tmp_path / "users"

    assert main(["export", SERVICE_SID, "--dataset", str(root), *flags]) == 2

    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"conv-frames: ConfigurationError: {message}")
    assert not root.exists()  # refused before the root was made or locked


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_pages": -1}, "max_pages=-1 must be an integer >= 1 (pages)"),
        ({"lock_timeout": float("nan")}, "lock_timeout=nan must be a finite"),
        ({"keep": 0}, "keep=0 must be an integer >= 1"),
    ],
)
def test_bad_settings_of_the_library_are_refused_before_the_lock_is_taken(
    tmp_path: Path, setting: dict[str, Any], message: str
) -> None:
    root = tmp_path / "users"

    with pytest.raises(conv_frames.ConfigurationError) as caught:
        conv_frames.export_snapshots(root, [SERVICE_SID], **setting, **CREDENTIALS)

    assert str(caught.value).startswith(message)
    assert not root.exists()
