"""Progress: quiet unless someone watches or asks, a callback for other UIs (#5)."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conv_frames
from conv_frames import ProgressEvent
from conv_frames._cli import main
from conv_frames._progress import ProgressReporter, progress_enabled
from conv_frames.emulator import Emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(users=120, page_size_cap=25) as emulator:
        yield emulator


def options(emu: Emulator) -> dict[str, Any]:
    return {
        "account_sid": emu.account_sid,
        "auth_token": emu.auth_token,
        "base_url": emu.base_url,
    }


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_by_default_outside_a_terminal_or_notebook(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    users = conv_frames.load_users(emu.service_sid, **options(emu))
    conv_frames.fill_presence(users, **options(emu))

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_on_with_the_argument(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    users = conv_frames.load_users(emu.service_sid, progress=True, **options(emu))
    listing = capsys.readouterr()
    conv_frames.fill_presence(users, progress=True, **options(emu))
    presence = capsys.readouterr()

    assert listing.out == presence.out == ""  # bars go to stderr, never stdout
    assert "users: 120 users" in listing.err
    assert "pages=5" in listing.err
    assert "presence: 100%" in presence.err
    assert "120/120" in presence.err
    assert "users/s" in presence.err


def test_false_stays_quiet_even_on_a_terminal(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    conv_frames.load_users(emu.service_sid, progress=False, **options(emu))
    shown_when_false = terminal.getvalue()
    conv_frames.load_users(emu.service_sid, **options(emu))

    assert shown_when_false == ""
    assert "users: 120 users" in terminal.getvalue()


def test_a_callback_gets_the_listing_and_the_fill(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[ProgressEvent] = []

    users = conv_frames.load_users(
        emu.service_sid, progress=events.append, **options(emu)
    )
    conv_frames.fill_presence(users, progress=events.append, **options(emu))

    listing = [event for event in events if event.task == "users"]
    fill = [event for event in events if event.task == "presence"]
    assert [event.done for event in listing] == [25, 50, 75, 100, 120, 120]
    assert [event.pages for event in listing] == [1, 2, 3, 4, 5, 5]
    assert [event.finished for event in listing] == [False] * 5 + [True]
    assert {event.total for event in listing} == {None}
    assert fill[-1].finished
    assert fill[-1].done == fill[-1].total == 120
    assert fill[-1].requests == 120
    assert fill[-1].rate > 0
    dones = [event.done for event in fill]
    assert dones == sorted(dones)
    assert capsys.readouterr().err == ""


def test_auto_means_a_terminal_or_a_jupyter_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not progress_enabled(None)
    assert progress_enabled(True)
    assert progress_enabled(print)

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_enabled(None)
    assert not progress_enabled(False)

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", sys)
    assert progress_enabled(None)


def test_the_reporter_is_silent_without_listeners() -> None:
    with ProgressReporter(False, task="users") as report:
        report.update(10, pages=1)
        report.finish(10, pages=1)

    assert not report.active
    assert report.last is None


def test_the_command_line_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = str(tmp_path / "demo.parquet")

    assert main(["demo", "--users", "60", "--output", output]) == 0
    quiet = capsys.readouterr()
    assert main(["demo", "--users", "60", "--output", output, "--progress"]) == 0
    shown = capsys.readouterr()

    assert "users:" not in quiet.err
    assert "users: 60 users" in shown.err
    assert "loaded 60 users" in shown.out


@pytest.mark.parametrize("progress", ["false", "True", 0, 1, 1.0, [print]])
def test_progress_accepts_only_its_documented_forms(
    emu: Emulator, tmp_path: Path, progress: Any
) -> None:
    message = (
        f"progress={progress!r} is not supported; use None (a bar where someone "
        "watches), True or False (always or never a bar), or a callable that "
        "takes a ProgressEvent"
    )
    users = conv_frames.users_frame(emu.users()[:3])
    calls = [
        lambda: conv_frames.load_users(
            emu.service_sid, progress=progress, **options(emu)
        ),
        lambda: conv_frames.load_users(
            emu.service_sid, presence=True, progress=progress, **options(emu)
        ),
        lambda: conv_frames.export_users(
            emu.service_sid, tmp_path / "u.parquet", progress=progress, **options(emu)
        ),
        lambda: conv_frames.fill_presence(users, progress=progress, **options(emu)),
    ]
    before = len(emu.requests)

    for call in calls:
        with pytest.raises(conv_frames.ConfigurationError) as caught:
            call()
        assert str(caught.value) == message

    assert len(emu.requests) == before
    assert not (tmp_path / "u.parquet").exists()
