"""The one-page-ahead fetch: order kept, nothing lost or repeated, errors in place."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from conv_frames._prefetch import prefetch


class Boom(Exception):
    pass


def numbers(count: int, *, fail_at: int | None = None, log: list[int]) -> Iterator[int]:
    for number in range(count):
        if number == fail_at:
            raise Boom(f"item {number}")
        log.append(number)
        yield number


def test_yields_every_item_once_in_order() -> None:
    produced: list[int] = []

    assert list(prefetch(numbers(100, log=produced))) == list(range(100))
    assert produced == list(range(100))


def test_the_first_error_comes_after_the_items_before_it() -> None:
    produced: list[int] = []
    received: list[int] = []

    stream = prefetch(numbers(10, fail_at=3, log=produced))
    with pytest.raises(Boom, match="item 3"):
        received.extend(stream)

    assert received == [0, 1, 2]
    assert produced == [0, 1, 2]


def test_the_next_item_is_produced_while_the_consumer_works() -> None:
    second_started = threading.Event()

    def pages() -> Iterator[int]:
        yield 0
        second_started.set()
        yield 1

    stream = prefetch(pages())
    assert next(stream) == 0
    # The consumer has not asked for item 1, yet its production is under way.
    assert second_started.wait(timeout=5)
    assert list(stream) == [1]


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []
    stream = prefetch(numbers(1000, log=produced))

    assert next(stream) == 0
    stream.close()

    # One item handed over, at most one waiting in the slot, one being offered.
    assert len(produced) <= 3
    assert not [t for t in threading.enumerate() if t.name == "conv-frames-prefetch"]


def test_an_error_in_the_consumer_stops_the_producer_and_closes_its_source() -> None:
    closed = threading.Event()

    def pages() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    def consume() -> None:
        for number in prefetch(pages()):
            if number == 2:
                raise Boom("consumer")

    with pytest.raises(Boom, match="consumer"):
        consume()

    assert closed.is_set()
