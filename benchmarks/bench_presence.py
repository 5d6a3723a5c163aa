"""How fast presence fills against an account's concurrency limit (issue #5).

    .venv/bin/python benchmarks/bench_presence.py [--users 10000] [--limit 16]
        [--latency 0.010] [--repeat 1]

The emulator runs in a child process, bound to 127.0.0.1, with a limit on the
requests the account may have in flight and a latency that holds each
request's slot; it stops when the benchmark ends, or by itself after
``--lifetime`` seconds. No client can beat ``limit / latency`` users a second
(16 / 10 ms = 1,600/s): that is the ideal each rate is compared with.

Two fills of the same users are timed:

- ``told``: ``fill_presence(max_concurrency=LIMIT)``: the client knows the limit.
- ``untold``: ``fill_presence()``: it does not (the pool may go up to 32) and
  must find the limit from the server's 429 answers.

Every user's presence is checked against the emulator's seeded values; the
exit status is 1 if any is missing or wrong. Not a test: the rates depend on
the machine, and on what else it runs.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pandas as pd

import conv_frames
from conv_frames.emulator import Emulator
from conv_frames.emulator._data import presence_of

#: Seconds after which the emulator stops, whatever the parent does.
DEFAULT_LIFETIME = 900.0


@dataclass(frozen=True)
class Settings:
    """The emulated account: its users, limit and latency."""

    users: int
    limit: int
    latency: float
    lifetime: float

    @property
    def ideal(self) -> float:
        """Users a second at ``limit`` requests in flight, each ``latency`` long."""
        return self.limit / self.latency


@dataclass(frozen=True)
class Run:
    """One timed fill."""

    mode: str
    seconds: float
    cpu_seconds: float
    requests: int
    refused: int
    peak: int
    pushback: int | None
    correct: int

    def rate(self, users: int) -> float:
        return users / self.seconds

    @property
    def in_flight(self) -> str:
        """Peak requests in flight, and how many were when a 429 last cut the pool."""
        return f"{self.peak}/{'-' if self.pushback is None else self.pushback}"


def serve(settings: Settings, conn: Connection) -> None:
    """The child process: serve, and answer ``"statuses"`` until told to stop."""
    with Emulator(
        users=settings.users,
        max_concurrency=settings.limit,
        latency=settings.latency,
    ) as emulator:
        conn.send(
            {
                "account_sid": emulator.account_sid,
                "auth_token": emulator.auth_token,
                "base_url": emulator.base_url,
                "service_sid": emulator.service_sid,
            }
        )
        deadline = time.monotonic() + settings.lifetime
        while time.monotonic() < deadline:
            if not conn.poll(0.2):
                continue
            if conn.recv() != "statuses":
                break  # "stop"
            conn.send(Counter(entry.status for entry in emulator.requests))


class EmulatorProcess:
    """The emulator in a spawned child process, stopped on exit."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve, args=(settings, child), name="presence-emulator"
        )

    def __enter__(self) -> dict[str, str]:
        self._process.start()
        if not self._conn.poll(120):
            raise RuntimeError("the emulator did not start within 120 s")
        address: dict[str, str] = self._conn.recv()
        return address

    def __exit__(self, *exc_info: object) -> None:
        if self._process.is_alive():
            self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()  # our own child, by its PID
            self._process.join()

    def statuses(self) -> Counter[int]:
        """Answers the emulator sent so far, by status."""
        self._conn.send("statuses")
        counts: Counter[int] = self._conn.recv()
        return counts


def fill(
    mode: str, users: pd.DataFrame, server: EmulatorProcess, options: dict[str, Any]
) -> Run:
    before = server.statuses()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    filled = conv_frames.fill_presence(users, progress=False, **options)
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    after = server.statuses()

    return Run(
        mode=mode,
        seconds=seconds,
        cpu_seconds=(used.ru_utime - cpu.ru_utime) + (used.ru_stime - cpu.ru_stime),
        requests=filled.attrs["presence_requests"],
        refused=after[429] - before[429],
        peak=filled.attrs["presence_peak_concurrency"],
        pushback=filled.attrs["presence_pushback_concurrency"],
        correct=count_correct(filled),
    )


def count_correct(filled: pd.DataFrame) -> int:
    """Users whose presence equals what the emulator serves."""
    correct = 0
    for sid, online, notifiable in zip(
        filled["sid"], filled["is_online"], filled["is_notifiable"], strict=True
    ):
        got = tuple(None if pd.isna(v) else bool(v) for v in (online, notifiable))
        correct += got == presence_of(sid, reachability=True)
    return correct


def report(settings: Settings, runs: list[Run]) -> None:
    print(
        f"emulator: {settings.users:,} users, at most {settings.limit} in flight, "
        f"{settings.latency * 1000:g} ms a request: ideal {settings.ideal:,.0f} users/s"
    )
    header = (
        f"{'mode':<7} {'seconds':>8} {'users/s':>8} {'of ideal':>9} {'requests':>9} "
        f"{'429s':>5} {'in flight (peak/429)':>21} {'CPU/user':>9} {'correct':>15}"
    )
    print(header)
    for run in runs:
        rate = run.rate(settings.users)
        print(
            f"{run.mode:<7} {run.seconds:>8.2f} {rate:>8,.0f} "
            f"{rate / settings.ideal:>9.1%} {run.requests:>9,} {run.refused:>5} "
            f"{run.in_flight:>21} "
            f"{run.cpu_seconds / settings.users * 1e6:>7.0f}us "
            f"{f'{run.correct:,}/{settings.users:,}':>15}"
        )
    for mode in ("told", "untold"):
        rates = [r.rate(settings.users) for r in runs if r.mode == mode]
        if len(rates) > 1:
            print(
                f"{mode}: median {statistics.median(rates):,.0f} users/s "
                f"({statistics.median(rates) / settings.ideal:.1%} of ideal)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users", type=int, default=10_000, help="users in the emulated service"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=16,
        help="the account's concurrency limit: requests in flight",
    )
    parser.add_argument(
        "--latency", type=float, default=0.010, help="seconds each request takes"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed fills of each kind (told, untold)"
    )
    parser.add_argument(
        "--lifetime",
        type=float,
        default=DEFAULT_LIFETIME,
        help="seconds after which the emulator stops by itself",
    )
    args = parser.parse_args(argv)
    settings = Settings(args.users, args.limit, args.latency, args.lifetime)
    # Retries log at DEBUG and the table counts the 429s; a fault of another
    # kind would show as one WARNING per fill, which is worth seeing.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    server = EmulatorProcess(settings)
    runs: list[Run] = []
    with server as address:
        options = {key: address[key] for key in ("account_sid", "auth_token")}
        options["base_url"] = address["base_url"]
        users = conv_frames.load_users(address["service_sid"], **options)
        for _ in range(args.repeat):
            told = {**options, "max_concurrency": settings.limit}
            runs.append(fill("told", users, server, told))
            runs.append(fill("untold", users, server, options))

    report(settings, runs)
    return 0 if all(run.correct == settings.users for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
