"""Snapshots on object storage: s3:// roots against moto's S3 server on 127.0.0.1.

No request leaves this machine: the server binds the loopback, every client is
pointed at it (``endpoint_url`` and ``AWS_ENDPOINT_URL``), the credentials are
fake, and the instance-metadata lookup is switched off.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from moto.server import ThreadedMotoServer
from pandas.testing import assert_frame_equal

import conv_frames
from conv_frames._cli import main
from conv_frames._dataset import Dataset
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
def _lock_files_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object-store roots are locked in the cache folder: keep it in the test's."""
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


def test_a_snapshot_is_uploaded_data_first_manifest_last_and_reads_back(
    s3: dict[str, Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = s3["fs"], new_root()
    writes: list[str] = []
    put_file, pipe_file = fs.put_file, fs.pipe_file

    def spy_put(local: str, remote: str, **kw: Any) -> Any:
        writes.append(remote.rsplit("/", 1)[-1])
        return put_file(local, remote, **kw)

    def spy_pipe(remote: str, value: bytes, **kw: Any) -> Any:
        writes.append(remote.rsplit("/", 1)[-1])
        return pipe_file(remote, value, **kw)

    monkeypatch.setattr(fs, "put_file", spy_put)
    monkeypatch.setattr(fs, "pipe_file", spy_pipe)

    run = conv_frames.export_snapshots(
        root,
        all_services=True,
        max_workers=1,
        storage_options=s3["options"],
        **credentials(emulator),
    )

    assert run.ok
    assert writes == ["part-0.parquet", "_manifest.json"] * 2
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

    back = conv_frames.read_snapshot(root, sid, storage_options=s3["options"])
    listed = conv_frames.list_snapshots(root, storage_options=s3["options"])
    assert back.attrs["snapshot"] == first.snapshot
    assert listed["snapshot"].tolist() == [first.snapshot]

    caplog.set_level(logging.WARNING, "conv_frames")
    second = conv_frames.export_snapshots(root, [sid], **options)

    assert second.ok
    assert "snapshot=2099-01-01T000000Z: it has no manifest" in caplog.text
    assert sorted({key.rsplit("/", 1)[0] for key in objects(s3, root)}) == [
        f"service_sid={sid}/snapshot={first.snapshot}",
        f"service_sid={sid}/snapshot={second.snapshot}",
    ]


def test_runs_on_one_s3_root_take_turns_on_this_machine(
    s3: dict[str, Any], emulator: Emulator, tmp_path: Path
) -> None:
    root = new_root()
    with Dataset.open(root, s3["options"]).lock(0):
        with pytest.raises(conv_frames.DatasetLockedError, match=str(tmp_path)):
            conv_frames.export_snapshots(
                root,
                [emulator.service_sid],
                storage_options=s3["options"],
                **credentials(emulator),
            )

    assert objects(s3, root) == {}
    assert len(list((tmp_path / "cache" / "conv_frames" / "locks").iterdir())) == 1


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
