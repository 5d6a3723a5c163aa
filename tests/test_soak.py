"""The soak: 5,000 users through 20% mixed faults, 30 seeds, nothing lost (#3).

One emulator serves the same users (and so the same URLs) to a fault-free
load and to 30 loads whose requests meet faults drawn from every transient
kind with a different seed each. Each faulty load must equal the fault-free
one exactly, and the emulator must have served every page cleanly exactly
once per load. The figures of each run are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from conftest import SleepRecorder
from emulated import EVERY_TRANSIENT_FAULT, STALL_SECONDS, credentials, label
from pandas.testing import assert_frame_equal

import conv_frames
from conv_frames.emulator import Emulator, Fault, FaultPlan

USERS = 5000
PAGES = 100  # the emulator's pages hold 50 users
RUNS = 30
RATE = 0.2
#: Ten tries per page: 20% faults would need 10 in a row to end a load.
MAX_ATTEMPTS = 10
MAX_RETRY_WAIT = 60.0
#: Read timeout of the soak's loads: a stall (STALL_SECONDS) outlasts it, and a
#: page served late on a busy machine does not, so no retry goes uncounted.
READ_TIMEOUT = 0.5
assert READ_TIMEOUT * 1.5 < STALL_SECONDS


class SeededRuns(FaultPlan):
    """A random plan that the test re-seeds before each load.

    Each load sees the faults its seed draws for its own requests, counted
    from 0, whatever ran before; the plan counts what it injected, by label.
    """

    def __init__(self, kinds: Sequence[Fault]) -> None:
        super().__init__()
        self._mix = tuple(kinds)
        self._lock = threading.Lock()
        self._run = FaultPlan()
        self.received = 0
        self.injected: Counter[str] = Counter()

    def start(self, seed: int, rate: float) -> None:
        """Draw faults from ``seed`` from the next request on."""
        with self._lock:
            self._run = FaultPlan(rate=rate, seed=seed, kinds=self._mix)
            self.received = 0
            self.injected = Counter()

    def fault_for(self, index: int) -> Fault | None:
        with self._lock:
            fault = self._run.fault_for(self.received)
            self.received += 1
            if fault is not None:
                self.injected[label(fault)] += 1
        return fault


@dataclass(frozen=True)
class Run:
    seed: int
    requests: int
    retries: int
    injected: Counter[str]
    waited: float
    seconds: float


def test_thirty_seeded_fault_storms_each_load_exactly_the_fault_free_frame() -> None:
    plan = SeededRuns(EVERY_TRANSIENT_FAULT)
    runs: list[Run] = []
    with Emulator(users=USERS, seed=3, faults=plan) as emu:
        options = {
            **credentials(emu),
            "timeout": (5.0, READ_TIMEOUT),
            "max_attempts": MAX_ATTEMPTS,
            "max_retry_wait": MAX_RETRY_WAIT,
        }
        baseline = conv_frames.load_users(
            emu.service_sid, sleep=SleepRecorder(), **options
        )
        pages = [(entry.path, tuple(entry.query.items())) for entry in emu.requests]
        for seed in range(1, RUNS + 1):
            runs.append(load_through_faults(emu, plan, seed, baseline, options))
        counted = emu.fault_counts
        log = emu.requests

    assert_frame_equal(baseline, conv_frames.users_frame(emu.users()))
    assert baseline.attrs["requests"] == len(set(pages)) == PAGES
    # Every page was answered cleanly once per load: none lost, none twice.
    clean = Counter(
        (entry.path, tuple(entry.query.items()))
        for entry in log
        if entry.fault is None and entry.status == 200
    )
    assert clean == dict.fromkeys(pages, RUNS + 1)
    # The emulator injected what the plan chose (a stall is logged only once
    # it ends, so the last ones may still be pending).
    chosen: Counter[str] = Counter()
    for fault in EVERY_TRANSIENT_FAULT:
        for run in runs:
            chosen[fault.kind] += run.injected[label(fault)]
    assert {k: n for k, n in counted.items() if k != "stall"} == {
        k: n for k, n in chosen.items() if k != "stall" and n
    }
    report(runs)


def load_through_faults(
    emulator: Emulator,
    plan: SeededRuns,
    seed: int,
    baseline: pd.DataFrame,
    options: dict[str, Any],
) -> Run:
    """Load once under the faults of ``seed``; check it; return its figures."""
    plan.start(seed, RATE)
    sleeps = SleepRecorder()
    started = time.perf_counter()
    frame = conv_frames.load_users(emulator.service_sid, sleep=sleeps, **options)
    seconds = time.perf_counter() - started
    injected = +plan.injected

    assert_frame_equal(frame, baseline, obj=f"the load of seed {seed}")
    attrs = frame.attrs
    assert (attrs["rows"], attrs["pages"]) == (USERS, PAGES), seed
    # Every fault cost exactly one retry, and nothing else did.
    assert attrs["retries"] == sum(injected.values()) == len(sleeps.waits), seed
    assert attrs["requests"] == PAGES + attrs["retries"] == plan.received, seed
    assert all(0.0 <= wait <= MAX_RETRY_WAIT for wait in sleeps.waits), seed
    return Run(
        seed, attrs["requests"], attrs["retries"], injected, sum(sleeps.waits), seconds
    )


def report(runs: list[Run]) -> None:
    """Print each run's figures and the totals."""
    print(f"\nsoak: {USERS} users, {RUNS} seeds, fault rate {RATE}")
    for run in runs:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(run.injected.items()))
        print(
            f"seed {run.seed:2}: {run.requests} requests, {run.retries} retries, "
            f"{run.waited:.1f} s waited (recorded), {run.seconds:.2f} s: {kinds}"
        )
    totals: Counter[str] = Counter()
    for run in runs:
        totals.update(run.injected)
    requests = [run.requests for run in runs]
    print(
        f"faults injected and survived: {sum(totals.values())} "
        f"(retries {sum(run.retries for run in runs)}); requests per run "
        f"min {min(requests)}, median {statistics.median(requests)}, "
        f"max {max(requests)}; {sum(run.seconds for run in runs):.1f} s of loading"
    )
    for kind, n in sorted(totals.items()):
        print(f"  {kind}: {n}")
