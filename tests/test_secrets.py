"""An account's secret reaches Twilio and nothing else (#3).

Loads, exports and CLI runs fail in every way the emulator can make them
(and a few succeed), with the auth token or with an API key's secret. All
that comes out is gathered: every log record at DEBUG (urllib3's too), every
exception down its ``__cause__``/``__context__`` chain and its traceback, the
CLI's stdout and stderr, each repr, and every byte of every file written
(Parquet metadata included). None of it may hold the secret, the base64
``Authorization`` value built from it, or the secret's own run of that base64.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from conftest import SleepRecorder
from emulated import EVERY_TRANSIENT_FAULT, TIMEOUT, VirtualClock, credentials
from pandas.testing import assert_frame_equal

import conv_frames
from conv_frames import ConvFramesError
from conv_frames._cli import main
from conv_frames.emulator import Emulator, Fault, FaultPlan

SEED = 5  # the emulator's credentials derive from it
USERS = 120
UNKNOWN_SERVICE = "IS" + "0" * 32
#: The CLI runs that end with an exit code, and the code.
CLI_CODES = {"ok": "0", "503s": "4", "stall": "4", "404": "3", "swapped": "2"}


def needles(username: str, secret: str) -> dict[str, str]:
    """The forms the secret could leak in, by name (the names are safe to show)."""
    pair = f"{username}:{secret}".encode()
    encoded = base64.b64encode(pair).decode()
    # From the first 3-byte group that holds secret bytes only, base64 spells
    # the secret the same way whatever the username: a leak of a part of the
    # header shows there.
    start = -(-(len(username) + 1) // 3) * 3
    whole = (len(pair) - start) // 3 * 3
    run = base64.b64encode(pair[start : start + whole]).decode()
    assert run in encoded
    assert len(run) >= 24
    return {
        "the secret": secret,
        "the Authorization value": encoded,
        "the secret's run of the Authorization value": run,
        "the secret in base64": base64.b64encode(secret.encode()).decode(),
    }


class Evidence:
    """Everything a run let out, each text tagged with where it went."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.errors = 0

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def error(self, where: str, error: BaseException) -> None:
        self.errors += 1
        text = "".join(traceback.format_exception(error))
        self.add(f"{where}: traceback", text)
        for link in chained(error):
            name = type(link).__name__
            self.add(f"{where}: {name} str", str(link))
            self.add(f"{where}: {name} repr", repr(link))
            self.add(f"{where}: {name} args", repr(link.args))

    def run(self, where: str, action: Callable[[], object]) -> object:
        """Run ``action``; keep what it returns (as a repr) or raises."""
        try:
            result = action()
        except ConvFramesError as error:
            self.error(where, error)
            return None
        self.add(f"{where}: result", repr(result))
        return result

    def logs(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter()
        for record in records:
            where = f"log {record.name} {record.levelname}"
            self.add(where, record.getMessage())
            self.add(where, repr(record.args))
            if record.exc_info:
                self.add(where, formatter.formatException(record.exc_info))

    def files(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            self.add(f"file {path.name}", path.read_bytes().decode("latin-1"))
            if path.suffix == ".parquet":
                metadata = pq.read_metadata(path).metadata or {}
                for key, value in metadata.items():
                    self.add(f"file {path.name} metadata", (key + value).decode())

    def leaks(self, forms: dict[str, str]) -> list[str]:
        return [
            f"{name} in {where}"
            for where, text in self.texts
            for name, form in forms.items()
            if form in text
        ]


def chained(error: BaseException) -> Iterator[BaseException]:
    """The error and every error it was raised from or during, once each."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        link = todo.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo.extend(e for e in (link.__cause__, link.__context__) if e is not None)


def faulty(fault: Fault, times: int = 2, **options: Any) -> Emulator:
    """The seeded account's emulator, ``fault`` answering page 1 ``times``."""
    plan = FaultPlan(at={1: [fault] * times})
    return Emulator(users=USERS, seed=SEED, faults=plan, **options)


def every_page(pages: Callable[[], Iterator[conv_frames.Page]]) -> list[Any]:
    return list(pages())


def options_for(emulator: Emulator, variant: str, sleeps: SleepRecorder) -> Any:
    return {
        **credentials(emulator, api_key=variant == "api_key"),
        "sleep": sleeps,
        "max_attempts": 2,
        "timeout": TIMEOUT,
    }


def library_failures(
    evidence: Evidence, variant: str, folder: Path, sleeps: SleepRecorder
) -> None:
    """Every transient fault until the attempts run out, by every entry point."""
    for number, fault in enumerate(EVERY_TRANSIENT_FAULT):
        with faulty(fault) as emu:
            options = options_for(emu, variant, sleeps)
            sid = emu.service_sid
            path = folder / f"run-{number}.parquet"
            entry = number % 4
            if entry == 0:
                load = partial(conv_frames.load_users, sid, parquet_path=path)
                evidence.run("load_users", partial(load, **options))
            elif entry == 1:
                export = partial(conv_frames.export_users, sid, path, **options)
                evidence.run("export_users", export)
            elif entry == 2:
                pages = partial(conv_frames.iter_user_pages, sid, **options)
                evidence.run("iter_user_pages", partial(every_page, pages))
            else:
                with conv_frames.Client(**options) as client:
                    evidence.add("Client repr", repr(client))
                    evidence.run("Client.load_users", partial(client.load_users, sid))


def other_library_runs(
    evidence: Evidence,
    variant: str,
    folder: Path,
    sleeps: SleepRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refusals, a rate limit that never lifts, bad settings, and successes."""
    with Emulator(users=USERS, seed=SEED) as emu:
        options = options_for(emu, variant, sleeps)
        evidence.run("404", partial(conv_frames.load_users, UNKNOWN_SERVICE, **options))
        user, secret = user_and_secret(emu, variant)
        host = emu.base_url.removeprefix("http://")
        swapped = {"account_sid": secret, "auth_token": emu.account_sid}
        if variant == "api_key":
            swapped = {
                "account_sid": emu.account_sid,
                "api_key": secret,
                "api_secret": user,
            }
        settings = {
            "swapped credentials": swapped,
            "credentials in base_url": {
                **options,
                "base_url": f"http://{user}:{secret}@{host}",
            },
            "bad service SID": options,
        }
        for where, wrong in settings.items():
            sid = "IS123" if where == "bad service SID" else emu.service_sid
            evidence.run(where, partial(conv_frames.load_users, sid, **wrong))

    clock = VirtualClock()
    clock.install(monkeypatch)
    with Emulator(users=USERS, seed=SEED, rate_limit=1) as emu:
        options = options_for(emu, variant, sleeps)
        limited = partial(conv_frames.load_users, emu.service_sid, **options)
        evidence.run("rate limit", limited)

    plan = FaultPlan(rate=0.3, seed=2, kinds=EVERY_TRANSIENT_FAULT)
    with Emulator(users=USERS, seed=SEED, faults=plan) as emu:
        options = {**options_for(emu, variant, sleeps), "max_attempts": 8}
        path = folder / "good.parquet"
        frame = conv_frames.load_users(emu.service_sid, parquet_path=path, **options)
        evidence.add("attrs", repr(frame.attrs))
        back = conv_frames.read_parquet(path)
        assert_frame_equal(back, frame)
        evidence.add("read back attrs", repr(back.attrs))
        attrs = conv_frames.export_users(
            emu.service_sid, folder / "streamed.parquet", **options
        )
        evidence.add("export attrs", repr(attrs))


def cli_runs(
    evidence: Evidence,
    variant: str,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``conv-frames export``: success, each exit code the emulator can cause."""
    runs: list[tuple[str, Emulator, str, list[str]]] = [
        ("ok", Emulator(users=USERS, seed=SEED), "", ["-v"]),
        ("503s", faulty(Fault("status_503"), 3), "", ["--timeout", "0.2"]),
        ("stall", faulty(Fault("stall", seconds=1.0), 3), "", ["--timeout", "0.2"]),
        ("404", Emulator(users=USERS, seed=SEED), UNKNOWN_SERVICE, []),
        ("debug", faulty(Fault("reset_mid_body"), 3), "", ["--debug"]),
        ("swapped", Emulator(users=USERS, seed=SEED), "", []),
    ]
    for name, emu, service, extra in runs:
        with emu:
            sign_in(monkeypatch, emu, variant, swapped=name == "swapped")
            argv = [
                "export",
                service or emu.service_sid,
                "--output",
                str(folder / f"cli-{name}.parquet"),
                "--base-url",
                emu.base_url,
                "--max-attempts",
                "3",
                "--max-retry-wait",
                "0",
                *extra,
            ]
            evidence.run(f"CLI {name} exit code", partial(main, argv))
            out, err = capsys.readouterr()
            evidence.add(f"CLI {name} stdout", out)
            evidence.add(f"CLI {name} stderr", err)


def user_and_secret(emulator: Emulator, variant: str) -> tuple[str, str]:
    if variant == "api_key":
        return emulator.api_key, emulator.api_secret
    return emulator.account_sid, emulator.auth_token


def sign_in(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator, variant: str, swapped: bool
) -> None:
    user, secret = user_and_secret(emulator, variant)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", emulator.account_sid)
    if variant == "api_key":
        monkeypatch.setenv("TWILIO_API_KEY", secret if swapped else user)
        monkeypatch.setenv("TWILIO_API_SECRET", user if swapped else secret)
    elif swapped:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", secret)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", user)
    else:
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", secret)


@pytest.mark.parametrize("variant", ["auth_token", "api_key"])
def test_no_failure_lets_the_secret_out(
    variant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    sleeps: SleepRecorder,
) -> None:
    caplog.set_level(logging.DEBUG)
    evidence = Evidence()

    library_failures(evidence, variant, tmp_path, sleeps)
    other_library_runs(evidence, variant, tmp_path, sleeps, monkeypatch)
    cli_runs(evidence, variant, tmp_path, monkeypatch, capsys)
    evidence.logs(caplog.records)
    evidence.files(tmp_path)

    with Emulator(users=1, seed=SEED) as emu:
        user, secret = user_and_secret(emu, variant)
    assert evidence.leaks(needles(user, secret)) == []
    # What was searched is the real thing: every failure, each kind of log.
    # The faults, a 404, three bad settings and the rate limit; --debug now
    # prints its traceback to stderr (searched) and returns the exit code.
    failures = len(EVERY_TRANSIENT_FAULT) + 1 + 3 + 1
    assert evidence.errors == failures
    loggers = {record.name for record in caplog.records}
    assert "conv_frames._transport" in loggers
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["cli-ok.parquet", "good.parquet", "streamed.parquet"]
    outputs = dict(evidence.texts)
    assert outputs["CLI ok stdout"].startswith("exported 120 users of ")
    assert [outputs[f"CLI {name} exit code: result"] for name in CLI_CODES] == list(
        CLI_CODES.values()
    )


@pytest.mark.parametrize("variant", ["auth_token", "api_key"])
def test_the_clients_reprs_mask_the_secret(variant: str) -> None:
    with Emulator(users=1, seed=SEED) as emu:
        user, secret = user_and_secret(emu, variant)
        client = conv_frames.Client(**credentials(emu, api_key=variant == "api_key"))

    with client:
        transport = client._transport
        texts = {
            "client": repr(client),
            "client str": str(client),
            "credentials": repr(client.credentials),
            "transport": repr(transport),
            "session auth": repr(transport._session.auth),
        }

    assert texts["client"] == (
        f"<Client account_sid={emu.account_sid!r} base_url={emu.base_url!r}>"
    )
    assert "password='***'" in texts["credentials"]
    assert texts["session auth"] == f"<BasicAuth username={user!r} password='***'>"
    leaks = [
        f"{name} in {where}"
        for where, text in texts.items()
        for name, form in needles(user, secret).items()
        if form in text
    ]
    assert leaks == []


def test_a_lent_session_is_not_left_carrying_the_credentials() -> None:
    """After a load, the caller's session sends nothing of ours anywhere else."""
    session = requests.Session()
    with Emulator(users=3, seed=SEED) as emu:
        frame = conv_frames.load_users(
            emu.service_sid,
            account_sid=emu.account_sid,
            auth_token=emu.auth_token,
            base_url=emu.base_url,
            session=session,
        )

    assert len(frame) == 3
    assert session.auth is None
    assert "Authorization" not in session.headers
    assert session.get_adapter("http://127.0.0.1/") is not None  # still open
