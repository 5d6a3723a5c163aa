"""The emulator in a process of its own, driven over its stdin and stdout.

``python -m benchmarks._server --users 10000,100000`` builds the services,
binds 127.0.0.1 and prints one JSON line: the base URL, the credentials and
the service SIDs. It then answers commands, one per line on stdin:

- ``requests``: prints ``{"requests": N}``, the requests received so far;
- end of input (the parent closed the pipe or died): stops.

It also stops by itself after ``--lifetime`` seconds, whatever happens.

Why a separate process: the emulator is Python too. In the loader's process
its request handling would take the interpreter lock from the code being
timed, so the numbers would measure the emulator.

Why pinned (``pin=True``, as ``benchmarks.run`` asks): on Linux, with two
or more CPUs, the emulator gets the last CPU and the benchmark the others,
for as long as the emulator runs. Left to
itself, the scheduler wakes the emulator on the CPU of the client that just
wrote to it, so client and server take turns on one core: a client that
overlaps its work with the server's wait (as it would against Twilio, whose
servers are other machines) could not show it. Sequential clients (the
floor, the rivals) are not changed by the pinning.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from conv_frames.emulator import Emulator

__all__ = ["EmulatorProcess", "ServerInfo"]

#: Seconds after which a server stops even if nobody told it to.
DEFAULT_LIFETIME = 3 * 3600.0
#: Seconds a parent waits for the server to start or stop.
_START_TIMEOUT = 300.0


@dataclass(frozen=True)
class ServerInfo:
    """Where a running emulator listens, and what it serves."""

    base_url: str
    account_sid: str
    auth_token: str
    service_sids: list[str]
    users: list[int]

    def service_for(self, users: int) -> str:
        """The SID of the service that holds ``users`` users."""
        return self.service_sids[self.users.index(users)]


class EmulatorProcess:
    """Start ``benchmarks._server`` as a child process; stop it on exit.

    Args:
        users: Users per service.
        latency: Seconds the emulator adds before each answer.
        pin: Pin the emulator and this process to CPUs of their own (above).
    """

    def __init__(
        self, users: Sequence[int], *, latency: float = 0.0, pin: bool = False
    ) -> None:
        self.users = list(users)
        self.latency = latency
        self.pin = pin
        self._process: subprocess.Popen[str] | None = None
        self._own_cpus: set[int] | None = None
        self.info: ServerInfo | None = None

    def __enter__(self) -> ServerInfo:
        command = [
            sys.executable,
            "-m",
            "benchmarks._server",
            "--users",
            ",".join(str(count) for count in self.users),
            "--latency",
            str(self.latency),
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = _readline(self._process, _START_TIMEOUT)
        self.info = ServerInfo(**json.loads(line))
        if self.pin:
            self._pin(self._process.pid)
        return self.info

    def _pin(self, pid: int) -> None:
        """Give the emulator the last CPU and this process the others."""
        if not hasattr(os, "sched_setaffinity"):
            return
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return
        os.sched_setaffinity(pid, {cpus[-1]})
        self._own_cpus = set(cpus)
        os.sched_setaffinity(0, set(cpus[:-1]))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        if self._own_cpus is not None:
            os.sched_setaffinity(0, self._own_cpus)
        if process.stdin is not None:
            process.stdin.close()  # the server stops at end of input
        try:
            process.wait(timeout=_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()  # our own child, by its handle
            process.wait()

    def requests_received(self) -> int:
        """How many requests the emulator has received so far."""
        process = self._process
        assert process is not None, "the emulator process is not started"
        assert process.stdin is not None
        process.stdin.write("requests\n")
        process.stdin.flush()
        return int(json.loads(_readline(process, _START_TIMEOUT))["requests"])


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(_line(process.stdout)))
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        raise RuntimeError("the emulator process did not answer; see its stderr")
    return lines[0]


def _line(stream: IO[str] | None) -> str:
    return stream.readline() if stream is not None else ""


def serve(users: list[int], latency: float, lifetime: float) -> None:
    """Serve until stdin ends or ``lifetime`` seconds pass."""
    with Emulator(users=users, seed=0, latency=latency) as emulator:
        info: dict[str, Any] = {
            "base_url": emulator.base_url,
            "account_sid": emulator.account_sid,
            "auth_token": emulator.auth_token,
            "service_sids": emulator.service_sids,
            "users": users,
        }
        print(json.dumps(info), flush=True)
        commands = threading.Thread(
            target=_answer_commands, args=(emulator,), daemon=True
        )
        commands.start()
        commands.join(lifetime)


def _answer_commands(emulator: Emulator) -> None:
    for line in sys.stdin:
        if line.strip() == "requests":
            print(json.dumps({"requests": len(emulator.requests)}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", required=True, help="users per service, a,b,c")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME)
    args = parser.parse_args(argv)
    users = [int(count) for count in args.users.split(",")]
    serve(users, args.latency, args.lifetime)


if __name__ == "__main__":
    main()
