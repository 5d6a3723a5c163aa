"""Latency hiding: fetch the next page while the caller works on this one.

Listing is sequential (each page carries the link to the next), so the most
overlap there is to have is one page: while page N is normalized and
written, the request for page N+1 is already on the wire. The producer starts
on page N+2 only once the consumer asks for page N+1, that is once it is done
with page N: a page the consumer rejects stops the walk before anything past
the next page is requested. A consumer faster than the pages never makes the
producer wait, so the next request goes out as soon as a page is in.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["prefetch"]

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
    stop: threading.Event | None = None,
    name: str = "conv-frames-prefetch",
) -> Iterator[T]:
    """Yield from ``items``, producing the next item in a background thread.

    Order is kept and nothing is produced twice, and at most one item is
    produced ahead of the one the consumer holds. The first error the producer
    meets is raised here, after every item produced before it; if the consumer
    stops early (an error of its own, or ``close()``), ``stop`` is set and the
    producer stops after the item it is working on; pass an event the producer
    also watches (``LoadStats.cancelled``) so that its retry waits end at once,
    and its request on the wire too. ``stop`` is left alone once the producer
    has ended of itself.
    The thread is joined before this returns, for up to two seconds: a request
    already on the wire ends at once when ``stop`` is a ``CancelEvent`` the
    transport aborts on, else within its own timeout, its answer dropped.
    """
    # Two C-level queues: items one way, permits to produce the other. The
    # permits bound the items waiting to two; Queue and Semaphore, built on
    # Python-level conditions, cost more than a page is worth on a fast link.
    handoff: queue.SimpleQueue[T | _Done | _Failed] = queue.SimpleQueue()
    asked: queue.SimpleQueue[None] = queue.SimpleQueue()
    asked.put(None)  # one permit per item; the first is free
    stop = stop or threading.Event()
    worker = threading.Thread(
        target=_produce, args=(items, handoff, asked, stop), name=name, daemon=True
    )
    worker.start()
    finished = False  # the producer has ended; ``stop`` has nothing to stop
    try:
        while True:
            asked.put(None)  # done with the last item: the next but one may start
            item = handoff.get()
            finished = isinstance(item, _Failed | _Done)
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Done):
                return
            yield item
    finally:
        if not finished:
            stop.set()
        # A request already on the wire ends within its timeout; past a short
        # wait the daemon thread is left to finish it and drop the answer.
        worker.join(timeout=_JOIN_SECONDS)


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
