"""Latency hiding: fetch the next page while the caller works on this one.

Listing is sequential (each page carries the link to the next), so the most
overlap there is to have is one page: while page N is normalized and
written, the request for page N+1 is already on the wire.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Done:
    """Marks the end of the items."""


class _Failed:
    """Carries the producer's error to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterator[T], *, name: str = "conv-frames-prefetch") -> Iterator[T]:
    """Yield from ``items``, producing the next item in a background thread.

    Order is kept and nothing is produced twice. The first error the producer
    meets is raised here, after every item produced before it; if the consumer
    stops early (an error of its own, or ``close()``), the producer stops after
    the item it is working on, and the thread is joined before this returns.
    """
    handoff: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=1)
    stop = threading.Event()
    worker = threading.Thread(
        target=_produce, args=(items, handoff, stop), name=name, daemon=True
    )
    worker.start()
    try:
        while True:
            item = handoff.get()
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Done):
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _produce(
    items: Iterator[T], handoff: queue.Queue[T | _Done | _Failed], stop: threading.Event
) -> None:
    try:
        for value in items:
            if not _offer(handoff, value, stop):
                return
        _offer(handoff, _Done(), stop)
    except BaseException as error:  # handed over, and raised by the consumer
        _offer(handoff, _Failed(error), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _offer(
    handoff: queue.Queue[T | _Done | _Failed],
    item: T | _Done | _Failed,
    stop: threading.Event,
) -> bool:
    """Put ``item`` in the hand-off slot unless the consumer has gone away."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=_POLL_SECONDS)
        except queue.Full:
            continue
        return True
    return False
