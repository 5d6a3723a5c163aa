"""The conv-frames command line: summaries, one-line failures, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
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
from conv_frames._cli import main
from conv_frames.emulator import Emulator, FaultPlan


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


def test_the_emulator_command_sets_the_accounts_limits_and_reachability(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: dict[str, Any] = {}

    def fill_instead_of_serving(emulator: Emulator) -> None:
        options = {
            "account_sid": emulator.account_sid,
            "auth_token": emulator.auth_token,
            "base_url": emulator.base_url,
        }
        users = conv_frames.users_frame(emulator.users())
        served["filled"] = conv_frames.fill_presence(
            users,
            max_concurrency=8,
            initial_concurrency=8,
            sleep=SleepRecorder(),
            **options,
        )
        served["log"] = emulator.requests
        url = f"{emulator.base_url}/v1/Services/{emulator.service_sid}/Users"
        served["refused"] = requests.get(
            url, auth=(emulator.account_sid, emulator.auth_token), timeout=10
        )

    monkeypatch.setattr(Emulator, "serve_forever", fill_instead_of_serving)
    argv = ["emulator", "--port", "0", "--users", "20", "--latency", "0.02"]
    argv += ["--max-concurrency", "1", "--rate-limit", "1000", "--no-reachability"]

    assert main(argv) == 0

    banner = capsys.readouterr().out.splitlines()
    assert banner[2] == (
        "  limits:   concurrency limit 1, rate limit 1000/s, latency 20 ms, "
        "reachability off"
    )
    filled = served["filled"]
    assert filled["is_online"].isna().all()  # reachability off: the API says null
    assert filled["is_notifiable"].isna().all()
    assert filled.attrs["presence_failed"] == 0
    # Eight at once against a limit of one, each held 20 ms: the account refused.
    refused = [entry for entry in served["log"] if entry.status == 429]
    assert refused
    assert filled.attrs["presence_retry_reasons"] == {"HTTP 429": len(refused)}


def test_the_emulator_commands_rate_limit_answers_429_past_the_budget(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: list[requests.Response] = []

    def ask_twice(emulator: Emulator) -> None:
        url = f"{emulator.base_url}/v1/Services/{emulator.service_sid}/Users"
        auth = (emulator.account_sid, emulator.auth_token)
        answers.extend(requests.get(url, auth=auth, timeout=10) for _ in range(2))

    monkeypatch.setattr(Emulator, "serve_forever", ask_twice)

    # One request per 100 s: the first is admitted, the second refused.
    assert (
        main(["emulator", "--port", "0", "--users", "3", "--rate-limit", "0.01"]) == 0
    )

    assert "rate limit 0.01/s" in capsys.readouterr().out
    assert [answer.status_code for answer in answers] == [200, 429]
    assert answers[1].json()["code"] == 20429
    assert 90 <= int(answers[1].headers["Retry-After"]) <= 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--max-concurrency", "0"],
            "max_concurrency must be a whole number of requests, 1 or more, got 0",
        ),
        (
            ["--rate-limit", "0"],
            "rate_limit must be a positive number of requests a second, got 0.0",
        ),
        (
            ["--rate-limit", "nan"],
            "rate_limit must be a positive number of requests a second, got nan",
        ),
        (["--latency", "-1"], "latency must be zero or more seconds, got -1.0"),
        (["--latency", "inf"], "latency must be zero or more seconds, got inf"),
    ],
)
def test_bad_emulator_limits_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", *argv]) == 2

    err = capsys.readouterr().err
    assert err == f"conv-frames: ConfigurationError: {message}\n"


def test_the_emulator_help_describes_the_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])
    shown = " ".join(capsys.readouterr().out.split())

    assert exited.value.code == 0
    assert "--max-concurrency N requests the account may have in flight" in shown
    assert "--rate-limit PER_SECOND requests a second the account may send" in shown
    assert "--reachability, --no-reachability" in shown
    with pytest.raises(SystemExit) as refused:
        main(["emulator", "--max-concurrency", "many"])
    assert refused.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_sigterm_stops_a_dataset_export_without_publishing(tmp_path: Path) -> None:
    """The signal reaches the main thread; the services' threads must stop too.

    One service's page stalls for the whole read timeout (30 s): its request
    is ended when the run is abandoned, not waited out.
    """
    root = tmp_path / "users"
    stall = FaultPlan(at={4: ["stall"]})
    with Emulator(users=[3000, 3000], seed=1, latency=0.02, faults=stall) as emulator:
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
        # Requests are logged once answered: 8 of them, and request 4 hangs.
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
    assert stopped < 5  # not the 30 s of the read timeout
    assert not list(root.glob("*/snapshot=*"))
    assert list(root.glob("service_sid=*/snapshot=*/_manifest.json")) == []


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize("name", ["users.txt", "users.csv", "users"])
def test_an_export_output_that_is_no_parquet_file_is_refused_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    output = tmp_path / name
    with ScriptedServer([]) as server:
        assert export(server, output) == 2

    assert server.requests == []
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == (
        f"conv-frames: ConfigurationError: --output {str(output)!r} names no format "
        "conv-frames writes here; end it in .parquet\n"
    )
