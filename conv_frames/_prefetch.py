"""Latency hiding: fetch the next pages while the caller works on the last ones.

Listing is sequential (each page carries the link to the next), so the one
overlap there is to have is between fetching and typing: while pages are
typed and written, the requests for the next ones are already on the wire.
The producer runs at most ``ahead`` items ahead of the last one the consumer
took, so a page the consumer rejects stops the walk within that many. A
consumer faster than the pages never makes the producer wait, so the next
request goes out as soon as a page is in; :meth:`Prefetched.wait` lets the
consumer gather what comes in while it works (see ``PageTyper``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["Prefetched", "prefetch"]

T = TypeVar("T")

_JOIN_SECONDS = 2.0
_POLL_SECONDS = 0.1


class _Done:
    """Marks the end of the items."""


class _Failed:
    """Carries the producer's error to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(
    items: Iterator[T],
    *,
    ahead: int = 1,
    stop: threading.Event | None = None,
    name: str = "conv-frames-prefetch",
) -> Prefetched[T]:
    """Yield from ``items``, producing the next items in a background thread.

    Order is kept and nothing is produced twice, and at most ``ahead`` items
    are produced ahead of the one the consumer holds. The first error the producer
    meets is raised here, after every item produced before it; if the consumer
    stops early (an error of its own, or ``close()``), ``stop`` is set and the
    producer stops after the item it is working on; pass an event the producer
    also watches (``LoadStats.cancelled``) so that its retry waits end at once.
    The thread is joined on closing, for up to two seconds: a request already
    on the wire ends within its own timeout, its answer dropped.
    """
    if not isinstance(ahead, int) or ahead < 1:
        raise ValueError(f"ahead must be a whole number of items, 1 or more: {ahead!r}")
    return Prefetched(items, ahead=ahead, stop=stop or threading.Event(), name=name)


class Prefetched(Iterator[T]):
    """The consumer's end of :func:`prefetch`, which can tell if ``next`` would wait."""

    def __init__(
        self, items: Iterator[T], *, ahead: int, stop: threading.Event, name: str
    ) -> None:
        # Two C-level queues: items one way, permits to produce the other. The
        # permits bound the items waiting to ahead + 1; Queue and Semaphore,
        # built on Python-level conditions, cost more than a page is worth on a
        # fast link.
        self._handoff: queue.SimpleQueue[T | _Done | _Failed] = queue.SimpleQueue()
        self._asked: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(ahead):
            self._asked.put(None)  # one permit per item; the first ones are free
        self._stop = stop
        self._closed = False
        self._early: T | _Done | _Failed | None = None  # taken by wait()
        self._worker = threading.Thread(
            target=_produce,
            args=(items, self._handoff, self._asked, stop),
            name=name,
            daemon=True,
        )
        self._worker.start()

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        self._asked.put(None)  # done with the last item: one more may start
        item, self._early = self._early, None
        if item is None:
            item = self._handoff.get()
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        if isinstance(item, _Done):
            self.close()
            raise StopIteration
        return item

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the next item (or the end).

        Returns:
            Whether it has come, so that ``next`` will not wait.
        """
        if self._closed or self._early is not None:
            return True
        try:
            self._early = self._handoff.get(timeout=timeout)
        except queue.Empty:
            return False
        return True

    def close(self) -> None:
        """Stop the producer after its current item; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        # A request already on the wire ends within its timeout; past a short
        # wait the daemon thread is left to finish it and drop the answer.
        self._worker.join(timeout=_JOIN_SECONDS)

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _produce(
    items: Iterator[T],
    handoff: queue.SimpleQueue[T | _Done | _Failed],
    asked: queue.SimpleQueue[None],
    stop: threading.Event,
) -> None:
    done = _Done()
    try:
        while _await(asked, stop):
            value = next(items, done)
            handoff.put(value)
            if value is done:
                return
    except BaseException as error:  # handed over, and raised by the consumer
        handoff.put(_Failed(error))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _await(asked: queue.SimpleQueue[None], stop: threading.Event) -> bool:
    """Wait for a permit to produce one more item, unless the consumer has gone."""
    while not stop.is_set():
        try:
            asked.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            continue
        return True
    return False
