"""Snapshots on object storage: publishing, the lease that locks a root, readers.

Every test runs against moto's S3 server on 127.0.0.1, with s3:// roots.

No request leaves this machine: the server binds the loopback, every client is
pointed at it (``endpoint_url`` and ``AWS_ENDPOINT_URL``), the credentials are
fake, and the instance-metadata lookup is switched off.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import filelock
import fsspec
import orjson
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from pandas.testing import assert_frame_equal
from s3fs.errors import translate_boto_error
from test_readers import FILES, LATEST_PER_SERVICE, MANIFESTS

import conv_frames
import conv_frames._lease
from conv_frames._cli import main
from conv_frames._dataset import Dataset, sweep_cached_staging
from conv_frames._lease import Lease, S3Object
from conv_frames.emulator import Emulator

BUCKET = "conv-frames-test"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """moto's S3 on a free loopback port, one bucket, and the client settings."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as environment:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                environment.delenv(name, raising=False)
            for name, value in {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}.items():
                environment.setenv(name, value)
            options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
            fs = fsspec.filesystem("s3", **options)
            fs.mkdir(BUCKET)
            yield {"endpoint": endpoint, "options": options, "fs": fs}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(users=[75, 4], seed=13) as running:
        yield running


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots for object stores are staged in the cache folder: keep it here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def credentials(emulator: Emulator) -> dict[str, Any]:
    return {
        "account_sid": emulator.account_sid,
        "auth_token": emulator.auth_token,
        "base_url": emulator.base_url,
    }


def new_root() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/users"


def objects(s3: dict[str, Any], root: str) -> dict[str, str]:
    """Every object under ``root`` (relative key) with its ETag."""
    fs = s3["fs"]
    fs.invalidate_cache()
    prefix = root.removeprefix("s3://")
    return {
        path[len(prefix) + 1 :]: info["ETag"]
        for path, info in fs.find(prefix, detail=True).items()
    }


def test_a_snapshot_is_staged_copied_into_place_then_committed_and_reads_back(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = s3["fs"], new_root()
    prefix = root.removeprefix("s3://") + "/"
    writes: list[str] = []
    put_file, copy, pipe_file = fs.put_file, fs.copy, fs.pipe_file

    def spy_put(local: str, remote: str, **kw: Any) -> Any:
        writes.append(f"put {remote.removeprefix(prefix).split('/')[0]}")
        return put_file(local, remote, **kw)

    def spy_copy(source: str, target: str, **kw: Any) -> Any:
        writes.append(f"copy to {target.rsplit('/', 1)[-1]}")
        return copy(source, target, **kw)

    def spy_pipe(remote: str, value: bytes, **kw: Any) -> Any:
        assert kw == {"mode": "create"}  # a manifest never replaces another
        writes.append(f"write {remote.rsplit('/', 1)[-1]}")
        return pipe_file(remote, value, **kw)

    monkeypatch.setattr(fs, "put_file", spy_put)
    monkeypatch.setattr(fs, "copy", spy_copy)
    monkeypatch.setattr(fs, "pipe_file", spy_pipe)

    run = conv_frames.export_snapshots(
        root,
        all_services=True,
        max_workers=1,
        storage_options=s3["options"],
        **credentials(emulator),
    )

    assert run.ok
    publish = ["put .staging", "copy to part-0.parquet", "write _manifest.json"]
    assert writes == publish * 2
    # Nothing is left of the staged files, nor of the run's lock.
    assert sorted(objects(s3, root)) == sorted(
        f"service_sid={sid}/snapshot={run.snapshot}/{name}"
        for sid in emulator.service_sids
        for name in ("_manifest.json", "part-0.parquet")
    )
    assert run.services[0].path == (
        f"{root}/service_sid={emulator.service_sid}/snapshot={run.snapshot}"
    )
    back = conv_frames.read_snapshot(
        root, emulator.service_sid, storage_options=s3["options"]
    )
    assert_frame_equal(
        back, conv_frames.load_users(emulator.service_sid, **credentials(emulator))
    )
    listed = conv_frames.list_snapshots(root, storage_options=s3["options"])
    rows = dict(zip(listed["service_sid"], listed["rows"], strict=True))
    assert rows == dict(zip(emulator.service_sids, [75, 4], strict=True))


def test_no_data_file_is_in_the_layout_while_it_uploads(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Globs see a data file without its manifest for one server-side copy only."""
    fs, root = s3["fs"], new_root()
    glob = f"{root.removeprefix('s3://')}/service_sid=*/snapshot=*/*"
    seen: dict[str, list[str]] = {}
    put_file, copy = fs.put_file, fs.copy

    def visible() -> list[str]:
        fs.invalidate_cache()
        return sorted(path.rsplit("/", 1)[-1] for path in fs.glob(glob))

    def observed_put(local: str, remote: str, **kw: Any) -> Any:
        put_file(local, remote, **kw)
        seen["uploaded"] = visible()

    def observed_copy(source: str, target: str, **kw: Any) -> Any:
        seen["before the copy"] = visible()
        copy(source, target, **kw)
        seen["after the copy"] = visible()

    monkeypatch.setattr(fs, "put_file", observed_put)
    monkeypatch.setattr(fs, "copy", observed_copy)
    run = conv_frames.export_snapshots(
        root,
        [emulator.service_sid],
        storage_options=s3["options"],
        **credentials(emulator),
    )

    assert run.ok
    assert seen == {
        "uploaded": [],
        "before the copy": [],
        "after the copy": ["part-0.parquet"],  # the manifest is the next write
    }
    assert [key for key in objects(s3, root) if key.startswith(".staging")] == []


def test_a_failure_before_the_manifest_leaves_nothing_visible(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root, sid = s3["fs"], new_root(), emulator.service_sid
    options = {"storage_options": s3["options"], **credentials(emulator)}
    first = conv_frames.export_snapshots(root, [sid], **options)
    before = objects(s3, root)

    def lost_connection(path: str, *args: Any, **kw: Any) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(fs, "pipe_file", lost_connection)
    run = conv_frames.export_snapshots(root, [sid], **options)

    error = run.services[0].error
    assert isinstance(error, conv_frames.ExportError)
    assert "Connection reset by peer" in str(error)
    assert objects(s3, root) == before  # the uploaded data file was taken back
    back = conv_frames.read_snapshot(root, sid, storage_options=s3["options"])
    assert back.attrs["snapshot"] == first.snapshot


def test_a_crashed_upload_is_invisible_and_the_next_run_removes_it(
    s3: dict[str, Any],
    emulator: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs, root, sid = s3["fs"], new_root(), emulator.service_sid
    options = {"storage_options": s3["options"], **credentials(emulator)}
    first = conv_frames.export_snapshots(root, [sid], **options)
    # What a run killed between its data file and its manifest leaves behind.
    published = f"{root}/service_sid={sid}/snapshot={first.snapshot}"
    crashed = f"{root}/service_sid={sid}/snapshot=2099-01-01T000000Z"
    fs.copy(f"{published}/part-0.parquet", f"{crashed}/part-0.parquet")
    staged = f"{root}/.staging/2099-01-01T000000Z-{sid}-0123456789ab/part-0.parquet"
    fs.copy(f"{published}/part-0.parquet", staged)

    back = conv_frames.read_snapshot(root, sid, storage_options=s3["options"])
    listed = conv_frames.list_snapshots(root, storage_options=s3["options"])
    assert back.attrs["snapshot"] == first.snapshot
    assert listed["snapshot"].tolist() == [first.snapshot]

    caplog.set_level(logging.INFO, "conv_frames")
    second = conv_frames.export_snapshots(root, [sid], **options)

    assert second.ok
    assert "snapshot=2099-01-01T000000Z: it has no manifest" in caplog.text
    assert f"removing 1 files under {root}/.staging, left by an earlier run" in (
        caplog.text
    )
    assert sorted({key.rsplit("/", 1)[0] for key in objects(s3, root)}) == [
        f"service_sid={sid}/snapshot={first.snapshot}",
        f"service_sid={sid}/snapshot={second.snapshot}",
    ]


LOCK = ".conv-frames.lock"


def write_lease(
    s3: dict[str, Any],
    root: str,
    *,
    pid: int,
    expires_in: float,
    host: str = "other-host",
) -> None:
    """Put the lease of a run on ``host``, expiring ``expires_in`` from now."""
    now = datetime.now(UTC)
    lease = {
        "format": "conv_frames.lock",
        "owner": uuid.uuid4().hex,
        "host": host,
        "pid": pid,
        "acquired_at": "2026-12-04T02:00:00+00:00",
        "renewed_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=expires_in)).isoformat(),
    }
    s3["fs"].pipe_file(f"{root.removeprefix('s3://')}/{LOCK}", orjson.dumps(lease))


def read_lease(s3: dict[str, Any], root: str) -> dict[str, Any]:
    lease: dict[str, Any] = orjson.loads(
        s3["fs"].cat_file(f"{root.removeprefix('s3://')}/{LOCK}")
    )
    return lease


def test_a_live_lease_stops_other_runs_and_names_its_holder(
    s3: dict[str, Any],
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    root, sid = new_root(), emulator.service_sid
    holder = f"pid {os.getpid()} on {socket.gethostname()} since 20"
    with Dataset.open(root, s3["options"], create=True).lock(0):
        lease = read_lease(s3, root)
        with pytest.raises(conv_frames.DatasetLockedError, match=holder):
            conv_frames.export_snapshots(
                root, [sid], storage_options=s3["options"], **credentials(emulator)
            )
        code = main(["export", sid, "--dataset", root, "--base-url", emulator.base_url])
        during = objects(s3, root)

    (line,) = capsys.readouterr().err.splitlines()
    assert code == 8
    assert line.startswith(
        f"conv-frames: DatasetLockedError: another conv-frames run is writing to "
        f"{root} ({holder}"
    )
    assert line.endswith(
        "nothing was exported. Let it finish, or wait for it with lock_timeout "
        "(--wait SECONDS)"
    )
    assert (lease["host"], lease["pid"]) == (socket.gethostname(), os.getpid())
    assert list(during) == [LOCK]
    assert objects(s3, root) == {}  # released


def test_a_lapsed_lease_is_taken_over_and_a_live_one_of_another_host_is_not(
    s3: dict[str, Any], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    root, sid = new_root(), emulator.service_sid
    options = {"storage_options": s3["options"], **credentials(emulator)}
    write_lease(s3, root, pid=4242, expires_in=60)
    with pytest.raises(
        conv_frames.DatasetLockedError,
        match="pid 4242 on other-host since 2026-12-04T02:00:00Z, its lease renewed "
        "until",
    ):
        conv_frames.export_snapshots(root, [sid], **options)
    assert list(objects(s3, root)) == [LOCK]

    write_lease(s3, root, pid=4242, expires_in=-1)  # as if it had crashed
    caplog.set_level(logging.WARNING, "conv_frames")
    run = conv_frames.export_snapshots(root, [sid], **options)

    assert run.ok
    assert (
        f"took over the lock on {root} from pid 4242 on other-host since "
        "2026-12-04T02:00:00Z: its lease lapsed at"
    ) in caplog.text
    assert LOCK not in objects(s3, root)


def test_a_live_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    s3: dict[str, Any], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """#6: only this host can tell that its process is gone; it waits no lapse."""
    root, sid = new_root(), emulator.service_sid
    options = {"storage_options": s3["options"], **credentials(emulator)}
    dead = _reaped_pid()
    write_lease(s3, root, pid=dead, expires_in=60, host=socket.gethostname())
    caplog.set_level(logging.WARNING, "conv_frames")

    run = conv_frames.export_snapshots(root, [sid], **options)

    assert run.ok
    assert f"took over the lock on {root} from pid {dead} on " in caplog.text
    write_lease(s3, root, pid=os.getppid(), expires_in=60, host=socket.gethostname())
    with pytest.raises(conv_frames.DatasetLockedError, match=f"pid {os.getppid()} "):
        conv_frames.export_snapshots(root, [sid], **options)


def _reaped_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_waits_for_the_first_one_then_publishes(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root, sid = s3["fs"], new_root(), emulator.service_sid
    options = {"storage_options": s3["options"], **credentials(emulator)}
    copy = fs.copy
    copying, go_on = threading.Event(), threading.Event()

    def paused_copy(source: str, target: str, **kw: Any) -> Any:
        copying.set()
        go_on.wait(30)  # the first run holds the lock, mid-publish
        return copy(source, target, **kw)

    monkeypatch.setattr(fs, "copy", paused_copy)
    first: list[conv_frames.SnapshotRun] = []
    running = threading.Thread(
        target=lambda: first.append(
            conv_frames.export_snapshots(root, [sid], **options)
        )
    )
    running.start()
    assert copying.wait(30)
    monkeypatch.setattr(fs, "copy", copy)

    waits: list[float] = []

    def wait_for_the_first_run(seconds: float) -> None:
        waits.append(seconds)
        go_on.set()
        running.join(30)

    try:
        with pytest.raises(conv_frames.DatasetLockedError, match="another conv-frames"):
            conv_frames.export_snapshots(root, [sid], **options)
        second = conv_frames.export_snapshots(
            root, [sid], lock_timeout=60, sleep=wait_for_the_first_run, **options
        )
    finally:
        go_on.set()
        running.join(30)

    (earlier,) = first
    assert earlier.ok
    assert second.ok
    assert waits == [1.0]  # one look, one pause, and the lease was free
    assert earlier.snapshot < second.snapshot
    listed = conv_frames.list_snapshots(root, storage_options=s3["options"])
    assert listed["snapshot"].tolist() == [earlier.snapshot, second.snapshot]
    assert LOCK not in objects(s3, root)


def test_a_run_whose_lease_was_taken_over_publishes_nothing(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root, sid = s3["fs"], new_root(), emulator.service_sid
    copy = fs.copy

    def copy_while_taken_over(source: str, target: str, **kw: Any) -> Any:
        # This run stalled past its lease, and a run on another host took over.
        write_lease(s3, root, pid=77, expires_in=60)
        return copy(source, target, **kw)

    monkeypatch.setattr(fs, "copy", copy_while_taken_over)
    run = conv_frames.export_snapshots(
        root, [sid], storage_options=s3["options"], **credentials(emulator)
    )

    error = run.services[0].error
    assert isinstance(error, conv_frames.DatasetLockedError)
    assert str(error).startswith(
        f"the lock on {root} was taken over by pid 77 on other-host since "
        "2026-12-04T02:00:00Z after this run's lease lapsed"
    )
    assert list(objects(s3, root)) == [LOCK]  # the other run's lease, untouched
    assert read_lease(s3, root)["pid"] == 77


def test_a_lease_is_renewed_with_a_write_conditional_on_its_etag(
    s3: dict[str, Any],
) -> None:
    fs, root = s3["fs"], new_root()
    key = f"{root.removeprefix('s3://')}/{LOCK}"
    store = S3Object(fs, key, root)

    lease = Lease.acquire(store, root, 0)
    try:
        before, etag = read_lease(s3, root), fs.info(key, refresh=True)["ETag"]
        lease.renew()
        after = read_lease(s3, root)
        renewed_etag = fs.info(key, refresh=True)["ETag"]
    finally:
        lease.release()

    assert after["owner"] == before["owner"]
    assert after["acquired_at"] == before["acquired_at"]
    assert after["expires_at"] > before["expires_at"]
    assert renewed_etag != etag
    assert not fs.exists(key)


def test_a_running_export_renews_its_lease_in_the_background(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = s3["fs"], new_root()
    key = f"{root.removeprefix('s3://')}/{LOCK}"
    monkeypatch.setattr(conv_frames._lease, "RENEW_SECONDS", 0.01)

    lease = Lease.acquire(S3Object(fs, key, root), root, 0)
    try:
        first = read_lease(s3, root)["renewed_at"]
        deadline = time.monotonic() + 10
        while read_lease(s3, root)["renewed_at"] == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.01)
    finally:
        lease.release()

    assert not fs.exists(key)


def careless_writes(call_s3: Any) -> Any:
    """A store that ignores conditional writes, as some S3 look-alikes do."""

    def call(method: str, *args: Any, **kw: Any) -> Any:
        kw.pop("IfNoneMatch", None)
        kw.pop("IfMatch", None)
        return call_s3(method, *args, **kw)

    return call


def unimplemented_writes(call_s3: Any) -> Any:
    """A store that refuses conditional writes with 501 Not Implemented."""

    def call(method: str, *args: Any, **kw: Any) -> Any:
        if method == "put_object" and "IfNoneMatch" in kw:
            refused = ClientError(
                {
                    "Error": {"Code": "NotImplemented", "Message": "If-None-Match"},
                    "ResponseMetadata": {"HTTPStatusCode": 501},
                },
                "PutObject",
            )
            raise translate_boto_error(refused)
        return call_s3(method, *args, **kw)

    return call


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            careless_writes,
            "its object store accepted a create-only write (If-None-Match: *) and "
            "a write conditional on an ETag (If-Match) that it should have refused",
        ),
        (unimplemented_writes, "the object store refused a conditional write"),
    ],
    ids=["ignored", "not-implemented"],
)
def test_a_store_without_conditional_writes_is_refused_not_locked_loosely(
    s3: dict[str, Any],
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    store: Any,
    message: str,
) -> None:
    fs, root = s3["fs"], new_root()
    monkeypatch.setattr(fs, "call_s3", store(fs.call_s3))

    with pytest.raises(conv_frames.ExportError) as caught:
        conv_frames.export_snapshots(
            root,
            [emulator.service_sid],
            storage_options=s3["options"],
            **credentials(emulator),
        )

    assert type(caught.value) is conv_frames.ExportError
    assert message in str(caught.value)
    assert objects(s3, root) == {}


def test_a_missing_bucket_and_other_object_stores_are_refused_with_the_way_out(
    s3: dict[str, Any], emulator: Emulator
) -> None:
    with pytest.raises(conv_frames.ConfigurationError, match="create the bucket first"):
        conv_frames.export_snapshots(
            "s3://no-such-bucket-here/users",
            [emulator.service_sid],
            storage_options=s3["options"],
            **credentials(emulator),
        )
    for root in ("memory://conv-frames/users", "gs://bucket/users"):
        with pytest.raises(conv_frames.ConfigurationError) as caught:
            conv_frames.export_snapshots(
                root, [emulator.service_sid], **credentials(emulator)
            )
        protocol = root.split(":")[0]
        assert str(caught.value) == (
            f"cannot write snapshots to {root!r}: runs take turns on an object "
            "store through a lease written with conditional writes, which "
            "conv-frames does on S3 only; export to an s3:// root or a local folder "
            f"(reading {protocol}:// works with its fsspec package installed)"
        )


KILLED_EXPORT = """
import sys
import conv_frames
conv_frames.export_snapshots(
    sys.argv[1],
    [sys.argv[2]],
    base_url=sys.argv[3],
    page_size=10,
    storage_options={"endpoint_url": sys.argv[4], "key": "testing", "secret": "x"},
)
"""


def test_a_killed_run_leaves_a_lease_that_lapses_and_staging_the_next_run_removes(
    s3: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, staging = new_root(), tmp_path / "cache" / "conv_frames" / "staging"
    with Emulator(users=[400], seed=3, latency=0.05) as emulator:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
        argv = [root, emulator.service_sid, emulator.base_url, s3["endpoint"]]
        exporter = subprocess.Popen(  # noqa: S603  # our interpreter, our script
            [sys.executable, "-c", KILLED_EXPORT, *argv]
        )
        deadline = time.monotonic() + 30
        while len(emulator.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        exporter.send_signal(signal.SIGKILL)
        exporter.wait()
        left = sorted(path.name for path in staging.glob("*/*"))
        lease = read_lease(s3, root)

        # As if LEASE_SECONDS had passed since the killed run last renewed it.
        s3["fs"].pipe_file(
            f"{root.removeprefix('s3://')}/{LOCK}",
            orjson.dumps({**lease, "expires_at": "2026-01-01T00:00:00+00:00"}),
        )
        caplog.set_level(logging.INFO, "conv_frames")
        run = conv_frames.export_snapshots(
            root,
            [emulator.service_sid],
            storage_options=s3["options"],
            **credentials(emulator),
        )

    assert lease["pid"] == exporter.pid
    folder, guard = left  # the killed run's staging folder, and its OS lock
    key = r"\d{4}-\d\d-\d\dT\d{6}Z"
    assert re.fullmatch(rf"{key}-{emulator.service_sid}-[0-9a-f]{{32}}", folder)
    assert guard == f"{folder}.lock"
    assert f"/{folder}, left by a run that was killed" in caplog.text
    assert f"from pid {exporter.pid} on {socket.gethostname()}" in caplog.text
    assert run.ok
    assert list(staging.glob("*/*")) == []
    assert sorted(objects(s3, root)) == [
        f"service_sid={emulator.service_sid}/snapshot={run.snapshot}/{name}"
        for name in ("_manifest.json", "part-0.parquet")
    ]


def test_staging_folders_of_live_runs_are_left_alone(tmp_path: Path) -> None:
    staging = tmp_path / "cache" / "conv_frames" / "staging" / "0123456789abcdef"
    staging.mkdir(parents=True)
    live, dead, orphan = (staging / name for name in ("live", "dead", "orphan"))
    for folder in (live, dead, orphan):
        folder.mkdir()
        (folder / "part-0.parquet").write_bytes(b"PAR1")
    (staging / "dead.lock").touch()  # its process is gone: nobody holds it
    held = filelock.FileLock(staging / "live.lock", thread_local=False)

    with held:
        sweep_cached_staging()
        kept = sorted(path.name for path in staging.iterdir())

    assert kept == ["live", "live.lock"]


def test_a_missing_root_or_one_that_is_an_object_is_named_as_such(
    s3: dict[str, Any], emulator: Emulator
) -> None:
    missing, file = new_root(), new_root()
    s3["fs"].pipe_file(file.removeprefix("s3://"), b"PAR1")
    options = {"storage_options": s3["options"]}
    readers = [
        lambda root: conv_frames.list_snapshots(root, **options),
        lambda root: conv_frames.read_snapshot(root, emulator.service_sid, **options),
        lambda root: conv_frames.diff_snapshots(root, emulator.service_sid, **options),
    ]

    def export(root: str) -> Any:
        return conv_frames.export_snapshots(
            root, [emulator.service_sid], **options, **credentials(emulator)
        )

    for read in readers:
        with pytest.raises(conv_frames.SnapshotError, match="nothing is there") as no:
            read(missing)
        assert str(no.value).startswith(f"no dataset at {missing}: ")
    for entry in [*readers, export]:
        with pytest.raises(conv_frames.ConfigurationError) as caught:
            entry(file)
        assert str(caught.value) == (
            f"{file} is a file, not a folder; pass a folder for the dataset"
        )
    assert objects(s3, missing) == {}


def test_the_readme_query_keeps_only_published_snapshots_of_an_s3_dataset(
    s3: dict[str, Any], emulator: Emulator
) -> None:
    fs, root = s3["fs"], new_root()
    options = {"storage_options": s3["options"], **credentials(emulator)}
    keys = [
        conv_frames.export_snapshots(root, all_services=True, **options).snapshot
        for _ in range(2)
    ]
    # What readers may meet mid-publish: a data file copied into place before
    # its manifest, and one still under .staging/.
    bucket_root = root.removeprefix("s3://")
    published = f"{bucket_root}/service_sid={emulator.service_sid}/snapshot={keys[1]}"
    fs.copy(
        f"{published}/part-0.parquet",
        f"{bucket_root}/service_sid={emulator.service_sid}/"
        "snapshot=2099-01-01T000000Z/part-0.parquet",
    )
    fs.copy(f"{published}/part-0.parquet", f"{bucket_root}/.staging/x/part-0.parquet")
    # DuckDB reads s3:// through s3fs here; with its httpfs extension it is the
    # same query (see the README).
    connection = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    connection.register_filesystem(fs)
    globs = {"files": f"{root}/{FILES}", "manifests": f"{root}/{MANIFESTS}"}

    counted = connection.execute(LATEST_PER_SERVICE, globs).fetchall()

    assert [row[:3] for row in counted] == [
        (sid, keys[1], len(emulator.users(sid)))
        for sid in sorted(emulator.service_sids)
    ]


def test_the_command_line_exports_and_diffs_on_s3_with_the_usual_aws_settings(
    s3: dict[str, Any],
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    root = new_root()
    export = ["export", "--dataset", root, "--all-services"]

    for _ in range(3):
        assert main([*export, "--base-url", emulator.base_url, "--keep", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    assert all(line.startswith("exported ") and f" to {root}/" in line for line in out)
    assert len(objects(s3, root)) == 2 * 2 * 2  # services x kept snapshots x files

    assert main(["diff", "--dataset", root, "--service", emulator.service_sid]) == 0
    assert capsys.readouterr().out.endswith(
        ": 0 added, 0 removed, 0 changed, 75 unchanged\n"
    )


def test_an_unreachable_store_or_no_bucket_is_one_line_and_its_exit_code(
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try, not botocore's retries
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", emulator.auth_token)
    # s3fs keeps one filesystem per set of options, whatever the environment says.
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    export = ["export", emulator.service_sid, "--base-url", emulator.base_url]

    codes = [
        main([*export, "--dataset", "s3://bkt/users"]),
        main(["diff", "--dataset", "s3://bkt/users"]),
        main([*export, "--dataset", "s3://"]),
        main(["diff", "--dataset", "s3://"]),
    ]
    lines = capsys.readouterr().err.splitlines()
    fsspec.get_filesystem_class("s3").clear_instance_cache()

    assert codes == [7, 1, 2, 2]
    assert len(lines) == 4
    hint = (
        "; check the store's endpoint (endpoint_url in storage_options, or "
        "AWS_ENDPOINT_URL), the network and the credentials"
    )
    assert lines[0].startswith("conv-frames: ExportError: could not lock s3://bkt/")
    assert lines[0].endswith(f"{hint}; nothing was exported")
    assert lines[1].startswith("conv-frames: SnapshotError: cannot read s3://bkt/")
    assert lines[1].endswith(hint)
    assert f"http://127.0.0.1:{port}/bkt" in lines[0]
    assert (
        lines[2:]
        == [
            "conv-frames: ConfigurationError: 's3://' names no bucket: name a bucket, "
            "as in s3://BUCKET/PREFIX"
        ]
        * 2
    )


def test_read_parquet_reads_snapshots_on_s3_whatever_the_path_names(
    s3: dict[str, Any], emulator: Emulator
) -> None:
    root, sid = new_root(), emulator.service_sid
    options = {"storage_options": s3["options"]}
    run = conv_frames.export_snapshots(
        root, all_services=True, **options, **credentials(emulator)
    )
    latest = conv_frames.read_snapshot(root, sid, **options)
    snapshot = f"{root}/service_sid={sid}/snapshot={run.snapshot}"

    for path in (snapshot.rsplit("/", 1)[0], snapshot, f"{snapshot}/part-0.parquet"):
        assert_frame_equal(conv_frames.read_parquet(path, **options), latest)
    assert_frame_equal(
        conv_frames.read_parquet(root, service_sid=sid, **options), latest
    )
    assert len(latest) == len(emulator.users(sid))
