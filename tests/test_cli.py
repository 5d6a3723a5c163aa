"""The conv-frames command line: summaries, one-line failures, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
from conv_frames._cli import main
from conv_frames.emulator import Emulator


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)


def export(server: ScriptedServer, output: Path, *extra: str) -> int:
    return main(
        [
            "export",
            SERVICE_SID,
            "--output",
            str(output),
            "--base-url",
            server.base_url,
            "--page-size",
            "2",
            "--max-attempts",
            "2",
            "--max-retry-wait",
            "0",
            *extra,
        ]
    )


@pytest.mark.usefixtures("credentials")
def test_export_writes_parquet_and_prints_one_summary_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = f"{{BASE}}{USERS_PATH}?PageSize=2&Page=1&PageToken=PT1"
    steps = [
        Step(json=users_page([user_record(1), user_record(2)], next_page_url=link)),
        Step(503, json=twilio_error(503, 20503, "busy")),
        Step(json=users_page([user_record(3)], page=1)),
    ]
    output = tmp_path / "users.parquet"
    with ScriptedServer(steps) as server:
        code = export(server, output)

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"exported 3 users of {SERVICE_SID} to {output}: ")
    assert ": 2 pages, 1 retries, " in out
    assert out.count("\n") == 1
    assert list(conv_frames.read_parquet(output)["sid"]) == [
        f"US{n:032d}" for n in (1, 2, 3)
    ]
    assert "retrying after HTTP 503 (attempt 1 of 2" in caplog.text


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize(
    ("step", "code", "message"),
    [
        (
            Step(401, json=twilio_error(401, 20003, "Authenticate")),
            3,
            "conv-frames: APIError: HTTP 401 (Twilio error 20003)",
        ),
        (
            Step(503, json=twilio_error(503, 20503, "busy")),
            4,
            "conv-frames: APIError: HTTP 503 (Twilio error 20503)",
        ),
        (Step(reset=True), 4, "conv-frames: TransportError: request failed"),
        (
            Step(json={"users": []}),
            5,
            "conv-frames: SchemaError: page 0",
        ),
        (
            Step(json=users_page([], next_page_url="https://elsewhere.example/x")),
            6,
            "conv-frames: PaginationError: refused the next page link",
        ),
    ],
    ids=["client-error", "transient", "network", "schema", "pagination"],
)
def test_export_failures_exit_with_their_code_and_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step: Step,
    code: int,
    message: str,
) -> None:
    with ScriptedServer([step, step]) as server:
        assert export(server, tmp_path / "users.parquet") == code

    out, err = capsys.readouterr()
    assert out == ""
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(message)
    assert "Traceback" not in err
    assert AUTH_TOKEN not in err
    assert list(tmp_path.iterdir()) == []


def test_export_without_credentials_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedServer([]) as server:
        assert export(server, tmp_path / "users.parquet") == 2

    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in capsys.readouterr().err
    assert server.requests == []


@pytest.mark.usefixtures("credentials")
def test_export_into_a_missing_folder_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedServer([]) as server:
        assert export(server, tmp_path / "missing" / "users.parquet") == 2

    assert "does not exist; create it first" in capsys.readouterr().err
    assert server.requests == []


@pytest.mark.usefixtures("credentials")
def test_debug_adds_the_traceback_and_keeps_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Step(401, json=twilio_error(401, 20003, "Authenticate"))
    with ScriptedServer([step]) as server:
        assert export(server, tmp_path / "users.parquet", "--debug") == 3

    err = capsys.readouterr().err
    assert "conv-frames: APIError: HTTP 401 (Twilio error 20003)" in err
    assert "Traceback (most recent call last)" in err
    assert AUTH_TOKEN not in err


def test_sigterm_mid_export_leaves_no_partial_file(tmp_path: Path) -> None:
    """cron's timeout, systemd and Kubernetes stop jobs with SIGTERM."""
    output = tmp_path / "users.parquet"
    output.write_bytes(b"yesterday's export")
    with Emulator(users=5000, seed=1, latency=0.02) as emulator:
        environment = {
            **os.environ,
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
        }
        command = [sys.executable, "-m", "conv_frames", "export", emulator.service_sid]
        command += ["--output", str(output), "--base-url", emulator.base_url]
        process = subprocess.Popen(  # noqa: S603  # our interpreter, our arguments
            command, env=environment, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while len(emulator.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)

    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == "conv-frames: terminated"
    assert output.read_bytes() == b"yesterday's export"
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--users", "-3"], "conv-frames: ConfigurationError: "),
        (["emulator", "--users", "-1"], "conv-frames: ConfigurationError: "),
        (["emulator", "--port", "70000"], "conv-frames: ConfigurationError: "),
    ],
)
def test_bad_emulator_settings_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2

    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err


def test_sigterm_stops_a_dataset_export_without_publishing(tmp_path: Path) -> None:
    """The signal reaches the main thread; the services' threads must stop too."""
    root = tmp_path / "users"
    with Emulator(users=[3000, 3000], seed=1, latency=0.02) as emulator:
        environment = {
            **os.environ,
            "TWILIO_ACCOUNT_SID": emulator.account_sid,
            "TWILIO_AUTH_TOKEN": emulator.auth_token,
        }
        command = [sys.executable, "-m", "conv_frames", "export", "--all-services"]
        command += ["--dataset", str(root), "--base-url", emulator.base_url]
        process = subprocess.Popen(  # noqa: S603  # our interpreter, our arguments
            command, env=environment, stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while len(emulator.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        stopped = time.monotonic() - signalled
        requests_after = len(emulator.requests)
        time.sleep(0.3)
        assert len(emulator.requests) == requests_after  # nothing more was sent

    assert process.returncode == 143
    assert out == ""
    assert stopped < 5
    assert list(root.glob("service_sid=*/snapshot=*/_manifest.json")) == []
