"""Presence: fill ``is_online`` and ``is_notifiable`` by fetching users one by one.

The list endpoint always says null for both fields; only
``GET /v1/Services/{service}/Users/{user}`` reports them. A large service
needs one request per user, so the fetches run in a pool of threads whose
width adapts to the server (issue #5):

- :class:`AdaptiveLimit` caps the requests in flight. It grows while answers
  come back clean and shrinks when the server pushes back (AIMD), so the pool
  finds an account's concurrency limit without being told it.
- Each fetch is one :meth:`Transport.get_json`, so the retry policy
  (``Retry-After`` honoured and capped, backoff with jitter), the error
  mapping and the redaction of credentials are the ones every other request
  gets. The transport's ``on_retry`` hook tells the pool why a request is
  retried: the fetch hands its slot back for the wait, and only a 429 (too
  many requests in flight) shrinks the limit. A 5xx, a reset or a timeout
  says nothing about the limit, so it is retried at the same width.

Every user is fetched once (duplicate SIDs too), and every user is either
filled or accounted for: a failure raises, or in lenient mode leaves a null
that is listed in ``attrs["presence_failed_sids"]`` and logged once. A
lenient fill in which every fetch was refused with the same 4xx raises all
the same: the frame does not belong to the account or service asked.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import requests

from ._config import Credentials, check_service_sid
from ._errors import (
    APIError,
    ConfigurationError,
    ConvFramesError,
    SchemaError,
    TransportError,
)
from ._progress import Progress, ProgressReporter, check_progress
from ._transport import (
    LoadStats,
    RetryEvent,
    RetryPolicy,
    Sleep,
    Timeout,
    Transport,
    describe_fault,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "MAX_CONCURRENCY",
    "MAX_THREADS",
    "AdaptiveLimit",
    "Answer",
    "Cancelled",
    "PresenceErrors",
    "PresenceFetcher",
    "Ticket",
    "check_load_presence",
    "check_presence_errors",
    "check_presence_options",
    "fill_presence",
    "with_presence",
]

logger = logging.getLogger(__name__)

PresenceErrors = Literal["raise", "null"]
Presence = tuple[bool | None, bool | None]
UserKey = tuple[str, str]  # (service SID, user SID)
Answer = Literal["clean", "pushback", "none"]

#: Requests in flight at most, unless the caller says otherwise.
DEFAULT_MAX_CONCURRENCY = 32
#: Requests in flight when a fill starts; slow start doubles it each round trip.
DEFAULT_INITIAL_CONCURRENCY = 4
#: Most worker threads a fill starts, whatever ``max_concurrency`` says: each
#: request in flight needs a thread, and a few thousand threads exhaust the
#: process (or the OS) long before any account takes that many requests (#5).
MAX_THREADS = 256
#: The largest ``max_concurrency`` accepted; a larger one is refused, not
#: clamped, since the pool could never keep that many requests in flight.
MAX_CONCURRENCY = MAX_THREADS
#: Seconds between two progress reports (and two looks at the backlog).
_TICK = 0.1
#: Longest wait for a slot before looking again, in seconds.
_POLL = 0.25
#: Seconds a failed or interrupted fill waits for its workers before it
#: raises, leaving any still blocked in a read behind.
_STOP_GRACE = 0.5
#: Longest wait, in round trips, between two probes past a refused level.
_MAX_PATIENCE = 64


@dataclass(frozen=True)
class Ticket:
    """One admitted request: the decrease epoch and the in-flight count it saw."""

    epoch: int
    in_flight: int


class Cancelled(Exception):
    """Raised to a worker waiting for a slot when the fill stops early."""


class AdaptiveLimit:
    """How many requests may be in flight: AIMD, steered by the server's answers.

    - Slow start: each clean answer adds a slot (the limit doubles every
      round trip) until the server first pushes back.
    - Additive increase: after that, one slot per round trip of clean answers.
    - Multiplicative decrease: pushback (a 429: too many requests in
      flight) cuts the limit to ``decrease`` times what was in flight when
      the refused request was sent, once per round trip: answers to requests
      sent before the last cut do not cut again. Other faults are not
      pushback: a 503 or a reset says nothing about how many the server takes.
    - Memory: the in-flight level of the last pushback is kept. Growing past
      it is slower: a probe refused at that level doubles the wait before the
      next, and growth stops while ``probing`` is off (the pool turns it off
      near the end of the work, where a refused request would wait out its
      ``Retry-After`` after all the rest is done).
    - Record: ``pushback_level`` keeps the in-flight count at the last
      pushback that cut the limit (None until one does), for the caller to
      report what the server took; it does not fade.
    - Forgiveness: the memory fades. Every 16 round trips of clean answers
      halve the wait between probes, and a pushback below the level the last cut
      left (a 429 the pool did not cause: another client of the account, a blip)
      cuts the limit but does not lengthen that wait. A few stray 429s thus
      cost a few round trips, never the rest of the fill (#5).

    Args:
        maximum: Never more in flight than this (the account's limit, if known).
        initial: In flight at the start; at most ``maximum``.
        decrease: Factor applied on pushback, between 0 and 1.
    """

    def __init__(
        self,
        maximum: int,
        *,
        initial: int = DEFAULT_INITIAL_CONCURRENCY,
        decrease: float = 0.7,
    ) -> None:
        self.maximum = maximum
        self.limit = float(min(initial, maximum))
        self.decrease = decrease
        self.probing = True
        self.in_flight = 0
        self.peak = 0
        self.pushbacks = 0
        self.pushback_level: int | None = None
        self._slow_start = True
        self._ceiling: int | None = None
        self._patience = 1.0
        self._epoch = 0
        self._cancelled = False
        self._condition = threading.Condition()

    def __repr__(self) -> str:
        return (
            f"<AdaptiveLimit {self.limit:.2f} of {self.maximum}, "
            f"{self.in_flight} in flight, ceiling {self._ceiling}>"
        )

    @property
    def ceiling(self) -> int | None:
        """In flight at the last pushback, until the server takes more again."""
        return self._ceiling

    @property
    def at_floor(self) -> bool:
        """Whether the limit is down to one request in flight."""
        return self.limit < 2

    def acquire(self) -> Ticket:
        """Wait for a slot and take it.

        Raises:
            Cancelled: :meth:`cancel` was called.
        """
        with self._condition:
            while self.in_flight >= max(1, int(self.limit)):
                if self._cancelled:
                    raise Cancelled
                # Bounded, so that a slot freed without a wake-up is found soon.
                self._condition.wait(_POLL)
            if self._cancelled:
                raise Cancelled
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return Ticket(self._epoch, self.in_flight)

    def release(self, ticket: Ticket, answer: Answer, *, wake: bool = False) -> None:
        """Give a slot back, learning from how its request went.

        Args:
            ticket: What :meth:`acquire` returned.
            answer: ``"clean"`` (the server answered at ease), ``"pushback"``
                (a 429) or ``"none"`` (nothing learnt, such as a 503).
            wake: Wake a waiting worker: the caller will not ask again soon.
                A worker that asks again at once needs no one woken, and a
                woken thread would find the slot taken.
        """
        with self._condition:
            self.in_flight -= 1
            before = max(1, int(self.limit))
            self.learn(ticket, answer)
            opened = max(1, int(self.limit)) - before
            if opened > 0 or wake:
                self._condition.notify(max(opened, 0) + int(wake))

    def learn(self, ticket: Ticket, answer: Answer) -> None:
        """Adjust the limit to one answer, keeping the slot."""
        with self._condition:
            if answer == "clean":
                self._grow()
            elif answer == "pushback":
                self._shrink(ticket)

    def cancel(self) -> None:
        """Wake every waiting worker with :class:`Cancelled`; admit no one again."""
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()

    def _grow(self) -> None:
        # Called once the slot is back: with it, were the slots (nearly) all used?
        if self.in_flight + 1 < int(self.limit) - 1:
            return  # the limit was not in use: this says nothing about it
        # Sixteen round trips of clean answers halve the patience.
        self._patience = max(1.0, self._patience * 0.5 ** (1 / (16 * self.limit)))
        if self._slow_start:
            step = 1.0
        elif self._ceiling is None or self.limit + 1 < self._ceiling:
            step = 1.0 / self.limit
        elif self.probing:
            step = 1.0 / (self.limit * self._patience)
        else:
            step = 0.0
        self.limit = min(float(self.maximum), self.limit + step)
        if self._ceiling is not None and self.limit >= self._ceiling + 1:
            self._ceiling = None  # the server now takes more than it did
            self._patience = 1.0

    @property
    def _level_cut_to(self) -> float:
        return (self._ceiling or 0) * self.decrease

    def _shrink(self, ticket: Ticket) -> None:
        self.pushbacks += 1
        if ticket.epoch != self._epoch:
            return  # sent before the last cut, which already answered this
        if self._ceiling is not None and ticket.in_flight > self._level_cut_to:
            # Refused again after growing back: wait longer before the next
            # probe. A 429 below the level of the last cut is noise, or
            # another client's, and is not held against the pool.
            self._patience = min(self._patience * 2, _MAX_PATIENCE)
        self._ceiling = self.pushback_level = ticket.in_flight
        self._slow_start = False
        self._epoch += 1
        self.limit = max(1.0, min(self.limit, ticket.in_flight) * self.decrease)


@dataclass
class _Outcome:
    """What a pool run found, filled in by the workers."""

    presence: dict[UserKey, Presence] = field(default_factory=dict)
    failed: dict[UserKey, ConvFramesError] = field(default_factory=dict)
    fatal: BaseException | None = None


class PresenceFetcher:
    """Fetches users one by one in an adaptive pool, for one set of credentials.

    Args:
        credentials: Whose users, and the basic-auth pair.
        base_url: The API root; every request goes there.
        timeout, retry, sleep, session: As the client's transport uses them.
        max_concurrency: Requests in flight at most.
        initial_concurrency: Requests in flight at the start.
    """

    def __init__(
        self,
        credentials: Credentials,
        base_url: str,
        *,
        timeout: Timeout,
        retry: RetryPolicy,
        sleep: Sleep = time.sleep,
        session: requests.Session | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        initial_concurrency: int | None = None,
    ) -> None:
        _check_concurrency(max_concurrency, initial_concurrency)
        self.credentials = credentials
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep
        self.session = session
        self.max_concurrency = max_concurrency
        self.initial_concurrency = min(
            initial_concurrency or DEFAULT_INITIAL_CONCURRENCY, max_concurrency
        )

    def fill(
        self,
        frame: pd.DataFrame,
        *,
        errors: PresenceErrors = "raise",
        progress: Progress = None,
        only_unfilled: bool = False,
    ) -> pd.DataFrame:
        """Return a copy of ``frame`` with ``is_online`` and ``is_notifiable`` filled.

        See :func:`conv_frames.fill_presence`.
        """
        check_presence_errors(errors)
        check_progress(progress)
        if not isinstance(only_unfilled, bool):
            raise ConfigurationError(
                f"only_unfilled={only_unfilled!r} must be True (fetch only the users "
                "a failed fill left unfilled) or False (fetch every user)"
            )
        keys = _user_keys(frame)
        known = _known_presence(frame, keys) if only_unfilled else {}
        carried = _carried_failures(frame, known)
        unique = [key for key in dict.fromkeys(keys) if key not in known]
        started = datetime.now(UTC)
        fetched_at = _oldest_fetch(frame, known, started)
        clock = time.perf_counter()

        run = _PoolRun(self, unique, errors=errors)
        try:
            outcome = run.execute(progress)
            self._refuse_if_every_fetch_was_refused(unique, outcome)
        except ConvFramesError as error:
            # Keep what was fetched, for the caller to resume from. Users a
            # lenient fill gave up on for a reason of their own (a 404) stay
            # failed; those the server failed (5xx, timeouts) are unfilled.
            presence = {**known, **run.outcome.presence}
            gone = {
                key: describe_fault(failure)
                for key, failure in run.outcome.failed.items()
                if not _outlasted_retries(failure)
            }
            error.unfilled = tuple(
                key[1]
                for key in unique
                if key not in run.outcome.presence and key not in gone
            )
            failures = {**carried, **{key[1]: why for key, why in gone.items()}}
            error.frame = _filled_frame(frame, keys, presence)
            error.frame.attrs.update(
                _frame_state(keys, error.unfilled, failures, fetched_at)
            )
            raise
        outcome.presence.update(known)

        fresh = {key[1]: describe_fault(error) for key, error in outcome.failed.items()}
        attrs: dict[str, Any] = {
            **_frame_state(keys, (), {**carried, **fresh}, fetched_at),
            "presence_users_fetched": len(unique),
            "presence_requests": run.requests,
            "presence_retries": run.retries,
            "presence_retry_reasons": dict(run.retry_reasons.most_common()),
            "presence_max_concurrency": self.max_concurrency,
            "presence_threads": run.threads,
            "presence_peak_concurrency": run.limit.peak,
            "presence_pushback_concurrency": run.limit.pushback_level,
            "presence_seconds": round(time.perf_counter() - clock, 3),
        }
        filled = _filled_frame(frame, keys, outcome.presence)
        filled.attrs.update(attrs)
        _log_fill(attrs, outcome)
        return filled

    def _refuse_if_every_fetch_was_refused(
        self, keys: Sequence[UserKey], outcome: _Outcome
    ) -> None:
        """Raise when every user failed with one 4xx: the frame is not this service's.

        Lenient mode is for a few users gone since the list was read. When
        none at all can be fetched, and for the same client error, the frame
        was listed from another service, account or host than the one asked.
        """
        if not keys or outcome.presence or len(outcome.failed) != len(keys):
            return
        errors = list(outcome.failed.values())
        statuses = {e.status if isinstance(e, APIError) else None for e in errors}
        first = errors[0]
        if len(statuses) != 1 or not isinstance(first, APIError):
            return
        if first.is_transient or not 400 <= first.status < 500:
            return
        services = ", ".join(sorted({service for service, _ in keys}))
        raise APIError(
            first.status,
            f"every one of the {len(keys)} users' fetches was answered "
            f"HTTP {first.status} ({first.message}), so none of them is a user of "
            f"service {services} on account {self.credentials.account_sid} at "
            f"{self.base_url}. Check that the frame was loaded with these "
            "credentials and base_url, and that its chat_service_sid (or "
            "attrs['service_sid']) names the service",
            url=first.url,
            code=first.code,
            more_info=first.more_info,
        ) from first


class _PoolRun:
    """One fill: the worker threads, their shared queue, and what they found."""

    def __init__(
        self, fetcher: PresenceFetcher, keys: list[UserKey], *, errors: PresenceErrors
    ) -> None:
        self.fetcher = fetcher
        self.errors = errors
        self.total = len(keys)
        self.limit = AdaptiveLimit(
            fetcher.max_concurrency, initial=fetcher.initial_concurrency
        )
        self.outcome = _Outcome()
        self._queue = collections.deque(keys)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._running = 0
        self._stats: list[LoadStats] = []
        self._held = threading.local()  # each worker's ticket, for the retry hooks
        self.retry_reasons: collections.Counter[str] = collections.Counter()
        self._last_wait = 1.0  # seconds the last 429 made a fetch wait
        self._failures_in_a_row = 0  # the lenient mode's circuit breaker
        self._clock = time.perf_counter()

    @property
    def requests(self) -> int:
        """HTTP requests sent so far."""
        return sum(stats.requests for stats in self._stats)

    @property
    def retries(self) -> int:
        """Requests that repeated an earlier one after a fault or a 429."""
        return sum(stats.retries for stats in self._stats)

    @property
    def threads(self) -> int:
        """Worker threads for this fill: see :func:`pool_threads`."""
        return pool_threads(self.total, self.fetcher.max_concurrency)

    @property
    def settled(self) -> int:
        """Users filled or given up on."""
        return len(self.outcome.presence) + len(self.outcome.failed)

    def execute(self, progress: Progress) -> _Outcome:
        """Fetch every user; raise the first failure unless lenient."""
        if not self.total:
            return self.outcome
        count = self.threads
        transport = self._transport(count)
        workers = [
            threading.Thread(
                target=self._work,
                args=(transport,),
                name=f"conv-frames-presence-{index}",
                daemon=True,
            )
            for index in range(count)
        ]
        self._running = count
        with ProgressReporter(progress, task="presence", total=self.total) as report:
            finished = False
            try:
                for worker in workers:
                    worker.start()
                self._watch(report)
                finished = self.outcome.fatal is None
            finally:
                self._stop.set()
                self.limit.cancel()
                self._join(workers, patient=finished)
                transport.close()  # a session of the caller's stays open
            if self.outcome.fatal is not None:
                raise self.outcome.fatal
            report.finish(self.settled, **self._counts())
        return self.outcome

    def _join(self, workers: list[threading.Thread], *, patient: bool) -> None:
        """Wait for the workers; after a failure or Ctrl-C, only a short while.

        A worker blocked in a read (a stalled request) would hold an error up
        to the read timeout (#5). The workers are daemon threads: one still
        reading after the grace is left behind, and its answer is dropped.
        """
        deadline = None if patient else time.monotonic() + _STOP_GRACE
        for worker in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(left)

    def _transport(self, workers: int) -> Transport:
        fetcher = self.fetcher
        return Transport(
            fetcher.credentials,
            timeout=fetcher.timeout,
            retry=fetcher.retry,
            sleep=self._wait_for_a_slot,
            session=fetcher.session,  # None: the transport's own, direct lane
            on_retry=self._on_retry,
            connections=workers,
        )

    def _on_retry(self, event: RetryEvent) -> None:
        """A fetch failed and will be sent again after ``event.wait`` seconds.

        The fetch hands its slot to another worker while it waits, even at
        one request in flight: a stray 429 must not stop the whole pool for
        its ``Retry-After`` (#5). A 429 also shrinks the limit; any other
        fault leaves the limit as it is.
        """
        with self._lock:
            self.retry_reasons[event.reason] += 1
        logger.debug(
            "retrying a user after %s (attempt %d, waiting %.2f s): %s",
            event.reason,
            event.attempt,
            event.wait,
            event.url,
        )
        ticket: Ticket | None = self._held.ticket
        if ticket is None:
            return
        if event.pushback:
            self._last_wait = event.wait
        self._held.ticket = None
        self.limit.release(ticket, "pushback" if event.pushback else "none", wake=True)

    def _wait_for_a_slot(self, seconds: float) -> None:
        """The transport's sleep: wait out a retry's delay, then take a slot again."""
        self._held.waited += seconds
        if self.fetcher.sleep is time.sleep:
            self._stop.wait(seconds)  # gives way at once when the fill stops
        else:
            self.fetcher.sleep(seconds)
        if self._held.ticket is None:
            self._held.ticket = self.limit.acquire()

    def _watch(self, report: ProgressReporter) -> None:
        """Report progress and steer probing until the workers are done or stop."""
        while not self._done.wait(_TICK) and not self._stop.is_set():
            self.limit.probing = self._worth_probing()
            report.update(self.settled, **self._counts())

    def _worth_probing(self) -> bool:
        # A refused probe waits before its retry (Retry-After: about a second
        # on Twilio); near the end that wait would outlast the remaining work.
        elapsed = time.perf_counter() - self._clock
        rate = self.settled / elapsed if elapsed > 0 else 0.0
        return len(self._queue) > 1.5 * rate * self._last_wait

    def _counts(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "concurrency": max(1, int(self.limit.limit)),
            "in_flight": self.limit.in_flight,
        }

    def _work(self, transport: Transport) -> None:
        stats = LoadStats()
        with self._lock:
            self._stats.append(stats)
        self._held.ticket = None
        try:
            while not self._stop.is_set() and self._work_on_one(transport, stats):
                pass
        except Cancelled:
            pass
        except BaseException as error:  # a bug: stop, and hand it to the caller
            self._fatal(error)
        finally:
            self._leave()

    def _work_on_one(self, transport: Transport, stats: LoadStats) -> bool:
        """Fetch the next user in a slot; False when there is none left."""
        self._held.ticket = self.limit.acquire()
        key = self._next()
        if key is None:
            return False
        answer: Answer = "none"
        try:
            self.outcome.presence[key] = self._fetch(transport, key, stats)
            answer = "clean"
            self._failures_in_a_row = 0
        except ConvFramesError as error:
            if isinstance(error, APIError) and not error.is_transient:
                answer = "clean"  # a prompt 404 still says the server is at ease
            self._failed(key, error)
        finally:
            ticket, self._held.ticket = self._held.ticket, None
            if ticket is not None:
                self.limit.release(ticket, answer)
        return True

    def _leave(self) -> None:
        ticket, self._held.ticket = self._held.ticket, None
        if ticket is not None:
            self.limit.release(ticket, "none", wake=True)
        with self._lock:
            self._running -= 1
            if not self._running:
                self._done.set()

    def _next(self) -> UserKey | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _fetch(self, transport: Transport, key: UserKey, stats: LoadStats) -> Presence:
        service_sid, user_sid = key
        url = (
            f"{self.fetcher.base_url}/v1/Services/{service_sid}"
            f"/Users/{quote(user_sid, safe='')}"
        )
        self._held.waited = 0.0
        while True:
            try:
                body = transport.get_json(url, stats)
            except APIError as error:
                if not self._worth_another_round(error):
                    raise
                # 429 through all of the transport's attempts: the pool has
                # slowed down meanwhile, so a 429 spends time, not attempts.
                asked = 1.0 if error.retry_after is None else error.retry_after
                stats.retries += 1
                event = RetryEvent(
                    url=error.url,
                    reason=describe_fault(error),
                    status=error.status,
                    attempt=error.attempts,
                    max_attempts=error.attempts,
                    wait=min(asked, self.fetcher.retry.max_retry_wait),
                )
                self._on_retry(event)
                self._wait_for_a_slot(event.wait)
                continue
            return _read_presence(body, user_sid)

    def _worth_another_round(self, error: APIError) -> bool:
        waited: float = self._held.waited
        return error.status == 429 and waited < self.fetcher.retry.max_total_wait

    def _failed(self, key: UserKey, error: ConvFramesError) -> None:
        if self.errors == "null" and _concerns_one_user(error):
            with self._lock:
                self.outcome.failed[key] = error
                if _outlasted_retries(error):
                    self._failures_in_a_row += 1
                broken = self._failures_in_a_row >= FAILURES_IN_A_ROW_TO_STOP
            if not broken:
                return
            # Every fetch failing after its retries (5xx, resets, timeouts) is
            # the server's failure, not each user's: lenient mode is for a few
            # users, and must not crawl through every retry of every remaining
            # user (hours for a dead server).
            self._fatal(_server_failing(error))
            return
        self._fatal(_with_lenient_hint(error) if self.errors == "raise" else error)

    def _fatal(self, error: BaseException) -> None:
        with self._lock:
            if self.outcome.fatal is None:
                self.outcome.fatal = error
        self._stop.set()
        self.limit.cancel()


def fill_presence(
    frame: pd.DataFrame,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    initial_concurrency: int | None = None,
    errors: PresenceErrors = "raise",
    progress: Progress = None,
    only_unfilled: bool = False,
    **client_options: Any,
) -> pd.DataFrame:
    """Fill ``is_online`` and ``is_notifiable`` by fetching each user of a frame.

    The list endpoint never reports presence, so each user is fetched from
    ``/v1/Services/{chat_service_sid}/Users/{sid}`` by a pool of threads. The
    pool starts at ``initial_concurrency`` requests in flight and adapts:
    clean answers widen it (up to ``max_concurrency``), answers of 429 narrow
    it; other faults (5xx, resets, timeouts) are retried at the same width.
    Failed requests are retried as :func:`load_users` retries them
    (``Retry-After`` honoured), except that a 429 costs time, not attempts:
    it is retried for up to ``max_total_wait`` seconds. Each distinct user is
    fetched once, and never again once fetched. Retries log at DEBUG; the
    fill logs one INFO line that counts them by reason, and one WARNING when
    faults other than 429 were retried.

    A null in the result means the API said null (the service's reachability
    is off, or the user has no such state); it is never turned into False.

    Args:
        frame: Users as :func:`load_users` returns them: a ``sid`` column, and
            ``chat_service_sid`` (else ``attrs["service_sid"]``).
        max_concurrency: Never more requests in flight than this, at most
            :data:`MAX_CONCURRENCY` (256; more is refused). Give the
            account's concurrency limit if you know it; the pool finds it
            anyway, at the cost of a few 429 answers. The pool runs
            ``min(users, 2 * max_concurrency, MAX_THREADS)`` threads: spares
            fetch while others wait out a backoff.
        initial_concurrency: Requests in flight at the start (default 4, or
            ``max_concurrency`` if lower); more than ``max_concurrency`` is
            refused.
        errors: ``"raise"`` (default): the first user that cannot be fetched
            stops the fill with its error. ``"null"``: a user that is gone
            (404) or whose fetch outlasted the retries is left null, listed
            in ``attrs["presence_failed_sids"]`` and logged once; errors that
            concern every user (401, 403) still raise, and so does a fill in
            which every fetch was answered with the same 4xx (the frame was
            listed from another service, account or host).
        progress: None shows a bar where someone watches, True or False
            forces it, a callable gets :class:`ProgressEvent` objects.
        only_unfilled: Resume a fill that failed: fetch only the users the
            failed fill left (``attrs["presence_unfilled_sids"]`` of the
            error's ``frame``) and keep every other row's presence. Without
            that list, the rows whose two columns are both null are fetched.
        **client_options: The options of :class:`Client` (credentials,
            ``base_url``, timeouts, ``max_attempts``...). A ``session`` given
            there carries the fetches as it is: give its adapter a pool of
            ``2 * max_concurrency`` connections, or urllib3 drops the extra
            ones (and says so in a warning).

    Returns:
        A copy of ``frame`` with both columns filled. Its ``attrs`` describe
        the whole frame, however many fills (a failed one, then resumes) it
        took: ``presence_fetched_at`` (when the fill that fetched its oldest
        presence started, UTC ISO 8601), ``presence_users`` (distinct users),
        ``presence_failed`` (a count), ``presence_failed_sids`` (those users,
        in frame order; a resume keeps them and does not fetch them again),
        ``presence_failures`` (each one's reason, such as ``"HTTP 404"``) and
        ``presence_unfilled_sids`` (users still to fetch: empty). The rest
        count this call alone: ``presence_users_fetched`` (users it fetched),
        ``presence_requests``, ``presence_retries``,
        ``presence_retry_reasons`` (retries by reason, such as
        ``{"HTTP 429": 12}``), ``presence_max_concurrency`` (as configured),
        ``presence_threads`` (the pool's worker threads),
        ``presence_peak_concurrency`` (most requests in flight),
        ``presence_pushback_concurrency`` (requests in flight when a 429 last
        cut the pool: about the account's limit as the pool found it; None
        when the server never pushed back) and ``presence_seconds``.

    Raises:
        ConfigurationError: Bad arguments or credentials, or a frame without
            SIDs; nothing was sent.
        APIError, TransportError, SchemaError: A user's fetch failed for good,
            or (``errors="null"``) every fetch was refused with one 4xx. The
            error's ``frame`` holds the presence fetched so far, and its
            ``unfilled`` the SIDs still to fetch: pass the frame back with
            ``only_unfilled=True`` to resume.

    Example:
        >>> users = conv_frames.load_users("IS...")  # doctest: +SKIP
        >>> users = conv_frames.fill_presence(users)  # doctest: +SKIP
    """
    # Imported here: the client imports this module.
    from ._client import open_client

    with open_client(fill_presence, client_options) as client:
        return client.fill_presence(
            frame,
            max_concurrency=max_concurrency,
            initial_concurrency=initial_concurrency,
            errors=errors,
            progress=progress,
            only_unfilled=only_unfilled,
        )


def with_presence(table: pa.Table, frame: pd.DataFrame) -> pa.Table:
    """Return ``table`` with the presence columns of ``frame`` (same rows, in order)."""
    for name in ("is_online", "is_notifiable"):
        column = pa.array(frame[name], type=pa.bool_(), from_pandas=True)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def check_presence_errors(errors: object, *, name: str = "errors") -> None:
    """Refuse an ``errors`` mode other than ``"raise"`` or ``"null"``."""
    if not isinstance(errors, str) or errors not in ("raise", "null"):
        raise ConfigurationError(
            f"{name}={errors!r} is not supported; use 'raise' or 'null'"
        )


def check_presence_options(
    max_concurrency: object,
    initial_concurrency: object,
    errors: object,
    *,
    prefix: str = "",
) -> None:
    """Refuse bad presence options before any request is sent.

    Args:
        max_concurrency, initial_concurrency, errors: As :func:`fill_presence`
            takes them.
        prefix: Put before each option's name in messages (``"presence_"``
            where :func:`load_users` takes them).
    """
    _check_concurrency(
        max_concurrency,
        initial_concurrency,
        names=(f"{prefix}max_concurrency", f"{prefix}initial_concurrency"),
    )
    check_presence_errors(errors, name=f"{prefix}errors")


def check_load_presence(
    presence: object,
    *,
    max_concurrency: object,
    initial_concurrency: object,
    errors: object,
) -> None:
    """Refuse :func:`load_users`' presence arguments before any request.

    ``presence`` must be a bool, and the ``presence_*`` options are refused
    when presence is off rather than silently ignored.
    """
    if not isinstance(presence, bool):
        raise ConfigurationError(
            f"presence={presence!r} must be True (also fetch each user's presence) "
            "or False"
        )
    check_presence_options(
        max_concurrency, initial_concurrency, errors, prefix="presence_"
    )
    given = {
        "presence_max_concurrency": max_concurrency != DEFAULT_MAX_CONCURRENCY,
        "presence_initial_concurrency": initial_concurrency is not None,
        "presence_errors": errors != "raise",
    }
    unused = [name for name, differs in given.items() if differs]
    if unused and not presence:
        raise ConfigurationError(
            f"{', '.join(unused)} only apply with presence=True; pass presence=True "
            "to fetch each user's presence, or drop them"
        )


def _check_concurrency(
    maximum: object,
    initial: object,
    *,
    names: tuple[str, str] = ("max_concurrency", "initial_concurrency"),
) -> None:
    """Refuse a pool width that is not a count of requests the pool can keep."""
    checked = [(names[0], maximum)]
    if initial is not None:
        checked.append((names[1], initial))
    for name, value in checked:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(
                f"{name}={value!r} must be an integer >= 1 (requests in flight)"
            )
        if value > MAX_CONCURRENCY:
            raise ConfigurationError(
                f"{name}={value!r} is more than {MAX_CONCURRENCY}, the most "
                "requests in flight a presence fill keeps; "
                f"pass at most {MAX_CONCURRENCY}: the pool finds the account's "
                "limit below it by itself"
            )
    if isinstance(initial, int) and isinstance(maximum, int) and initial > maximum:
        raise ConfigurationError(
            f"{names[1]}={initial!r} is more than {names[0]}={maximum!r}; the pool "
            f"starts at most at its maximum: lower {names[1]} or raise {names[0]}"
        )


def pool_threads(users: int, max_concurrency: int) -> int:
    """Worker threads a fill of ``users`` starts: never more than it can use.

    A worker waiting out a retry's backoff gives its slot up, so up to twice
    ``max_concurrency`` workers keep the slots busy meanwhile; but never more
    than one per user, nor more than :data:`MAX_THREADS`.
    """
    return min(users, 2 * max_concurrency, MAX_THREADS)


def _user_keys(frame: pd.DataFrame) -> list[UserKey]:
    """Each row's (service SID, user SID), checked before any request."""
    if not isinstance(frame, pd.DataFrame):
        raise ConfigurationError(
            f"fill_presence needs a users DataFrame, not {type(frame).__name__}"
        )
    if "sid" not in frame.columns:
        raise ConfigurationError(
            "the frame has no 'sid' column; pass users as load_users returns them"
        )
    services = _service_sids(frame)
    keys = []
    for position, (service, sid) in enumerate(zip(services, frame["sid"], strict=True)):
        if not isinstance(sid, str) or not sid:
            raise ConfigurationError(
                f"row {position} has no user SID ({sid!r}); presence is fetched by SID"
            )
        keys.append((service, sid))
    for service in set(services):
        check_service_sid(service)
    return keys


def _service_sids(frame: pd.DataFrame) -> list[str]:
    fallback = frame.attrs.get("service_sid")
    if "chat_service_sid" in frame.columns:
        values = [
            value if isinstance(value, str) else fallback
            for value in frame["chat_service_sid"].tolist()
        ]
    else:
        values = [fallback] * len(frame)
    if any(not isinstance(value, str) for value in values):
        raise ConfigurationError(
            "some rows have no chat_service_sid and frame.attrs has no "
            "'service_sid'; presence needs the service of each user"
        )
    return [str(value) for value in values]


def _read_presence(body: Any, sid: str) -> Presence:
    if not isinstance(body, dict):
        raise SchemaError(
            f"the answer for user {sid} is a JSON {type(body).__name__}, "
            "not a user object"
        )
    if body.get("sid") not in (None, sid):
        raise SchemaError(f"asked for user {sid}, the API answered {body['sid']!r}")
    values = []
    for name in ("is_online", "is_notifiable"):
        value = body.get(name)  # absent: the API did not say, so null
        if value is not None and not isinstance(value, bool):
            raise SchemaError(
                f"field {name!r} of user {sid} is {value!r}, "
                "expected true, false or null"
            )
        values.append(value)
    return values[0], values[1]


#: Fetches in a row that failed after all their retries (a 5xx, a reset, a
#: timeout; no fetch succeeding between them) after which a lenient fill gives
#: up: the server, not the users, is failing.
FAILURES_IN_A_ROW_TO_STOP = 8


def _outlasted_retries(error: ConvFramesError) -> bool:
    """Whether a fetch failed on a transient fault that every retry met again."""
    if isinstance(error, APIError):
        return error.is_transient
    return isinstance(error, TransportError)


def _server_failing(last: ConvFramesError) -> TransportError:
    error = TransportError(
        f"{FAILURES_IN_A_ROW_TO_STOP} user fetches in a row failed after all "
        f"their retries, the last with: {last}. The server is failing, not "
        "single users: the fill stopped (errors='null' only skips a few users "
        "that cannot be fetched). Try again later",
        url=getattr(last, "url", ""),
        transient=False,
    )
    error.__cause__ = last
    return error


def _with_lenient_hint(error: ConvFramesError) -> ConvFramesError:
    """A user that is gone (404): say how to carry on without it."""
    if not isinstance(error, APIError) or error.status != 404:
        return error
    hinted = APIError(
        error.status,
        f"{error.message}; the user is gone since the frame was listed: pass "
        "errors='null' to leave such users null (listed in "
        "attrs['presence_failed_sids']) and fill the rest",
        url=error.url,
        code=error.code,
        more_info=error.more_info,
        attempts=error.attempts,
    )
    hinted.__cause__ = error
    return hinted


def _concerns_one_user(error: ConvFramesError) -> bool:
    """Whether lenient mode may leave this user null and carry on."""
    if isinstance(error, APIError):
        return error.status == 404 or error.is_transient
    return isinstance(error, TransportError | SchemaError)


def _known_presence(
    frame: pd.DataFrame, keys: Sequence[UserKey]
) -> dict[UserKey, Presence]:
    """The rows a resumed fill keeps: all but ``attrs["presence_unfilled_sids"]``.

    Without that list (a frame that no failed fill returned), the rows whose
    two columns are both null are fetched again.
    """
    unfilled = frame.attrs.get("presence_unfilled_sids")
    known: dict[UserKey, Presence] = {}
    columns = [frame.get(name) for name in ("is_online", "is_notifiable")]
    for position, key in enumerate(keys):
        values = [
            None
            if column is None or pd.isna(column.iloc[position])
            else bool(column.iloc[position])
            for column in columns
        ]
        missing = key[1] in unfilled if unfilled is not None else values == [None] * 2
        if not missing:
            known[key] = (values[0], values[1])
    return known


def _carried_failures(
    frame: pd.DataFrame, known: Mapping[UserKey, Presence]
) -> dict[str, str]:
    """Failures of an earlier lenient fill that a resume keeps, with their reasons.

    A resume does not fetch a user an earlier fill gave up on (it is not in
    ``attrs["presence_unfilled_sids"]``), so that user stays failed.
    """
    kept = {key[1] for key in known}
    sids = frame.attrs.get("presence_failed_sids") or ()
    reasons = frame.attrs.get("presence_failures") or {}
    return {sid: str(reasons.get(sid, "unknown")) for sid in sids if sid in kept}


def _oldest_fetch(
    frame: pd.DataFrame, known: Mapping[UserKey, Presence], started: datetime
) -> str:
    """When the oldest presence of the result was fetched, as ISO 8601.

    A resume keeps rows an earlier fill fetched: they are as old as that fill.
    """
    earlier = frame.attrs.get("presence_fetched_at")
    if known and isinstance(earlier, str):
        try:
            return min(datetime.fromisoformat(earlier), started).isoformat()
        except (TypeError, ValueError):
            pass  # not a time this package wrote: this fill's start it is
    return started.isoformat()


def _frame_state(
    keys: Sequence[UserKey],
    unfilled: Sequence[str],
    failures: Mapping[str, str],
    fetched_at: str,
) -> dict[str, Any]:
    """The attrs that describe the whole frame, however many fills it took (#5).

    Users are counted once however many rows they have, and the SIDs listed
    are in frame order.
    """
    sids = list(dict.fromkeys(key[1] for key in keys))
    failed = [sid for sid in sids if sid in failures]
    left = set(unfilled)
    return {
        "presence_fetched_at": fetched_at,
        "presence_users": len(sids),
        "presence_failed": len(failed),
        "presence_failed_sids": failed,
        "presence_failures": {sid: failures[sid] for sid in failed},
        "presence_unfilled_sids": [sid for sid in sids if sid in left],
    }


def _filled_frame(
    frame: pd.DataFrame, keys: Sequence[UserKey], presence: Mapping[UserKey, Presence]
) -> pd.DataFrame:
    filled = frame.copy()
    values = [presence.get(key, (None, None)) for key in keys]
    for position, name in enumerate(("is_online", "is_notifiable")):
        dtype = _boolean_dtype(frame[name] if name in frame.columns else None)
        column = pd.array([value[position] for value in values], dtype=dtype)
        filled[name] = pd.Series(column, index=frame.index, name=name)
    return filled


def _boolean_dtype(column: pd.Series[Any] | None) -> Any:
    """Keep the frame's nullable boolean dtype (either backend); else ``boolean``."""
    dtype = None if column is None else column.dtype
    if isinstance(dtype, pd.BooleanDtype):
        return dtype
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_boolean(dtype.pyarrow_dtype):
        return dtype
    return pd.BooleanDtype()


def _log_fill(attrs: Mapping[str, Any], outcome: _Outcome) -> None:
    reasons: Mapping[str, int] = attrs["presence_retry_reasons"]
    logger.info(
        "filled presence of %d users in %.2f s (%d requests, at most %d in "
        "flight, %d retries%s)",
        attrs["presence_users_fetched"] - len(outcome.failed),
        attrs["presence_seconds"],
        attrs["presence_requests"],
        attrs["presence_peak_concurrency"],
        attrs["presence_retries"],
        f": {_counted(reasons)}" if reasons else "",
    )
    faults = {reason: n for reason, n in reasons.items() if reason != "HTTP 429"}
    if faults:
        # 429s are how the pool finds the account's limit; other faults are
        # the server's or the network's, and worth a look.
        logger.warning(
            "presence: %d requests were retried after faults: %s",
            sum(faults.values()),
            _counted(faults),
        )
    if outcome.failed:
        (key, error), *_ = outcome.failed.items()
        kinds = collections.Counter(attrs["presence_failures"].values())
        logger.warning(
            "presence of %d users could not be fetched and is left null (%s; "
            "see frame.attrs['presence_failures']); the first, %s: %s",
            len(outcome.failed),
            _counted(kinds),
            key[1],
            error,
        )
    values = list(outcome.presence.values())
    if values and all(value == (None, None) for value in values):
        logger.warning(
            "the API reported null presence for every user: is reachability "
            "enabled on the service (Conversations > Services > Reachability)?"
        )


def _counted(counts: Mapping[str, int]) -> str:
    """``"4 HTTP 503, 1 RequestTimeout"``, most frequent first."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {reason}" for reason, count in ordered)
