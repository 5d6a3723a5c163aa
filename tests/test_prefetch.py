"""The one-page-ahead fetch: order kept, nothing lost or repeated, errors in place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

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


@pytest.mark.parametrize("ahead", [1, 3])
def test_the_producer_runs_at_most_ahead_items_past_the_last_one_taken(
    ahead: int,
) -> None:
    produced: list[int] = []
    stream = prefetch(numbers(50, log=produced), ahead=ahead)

    assert next(stream) == 0
    assert stream.wait(timeout=5)  # item 1 has come
    threading.Event().wait(0.05)  # room to run further ahead, if it could
    assert len(produced) == 1 + ahead
    assert list(stream) == list(range(1, 50))
    assert produced == list(range(50))


def test_wait_says_whether_the_next_item_has_come() -> None:
    release = threading.Event()

    def slow() -> Iterator[int]:
        yield 0
        release.wait(5)
        yield 1

    stream = prefetch(slow())
    assert next(stream) == 0
    assert not stream.wait(timeout=0.01)
    release.set()
    assert stream.wait(timeout=5)
    assert next(stream) == 1
    assert stream.wait(timeout=5)  # the end comes too
    assert list(stream) == []


@pytest.mark.parametrize("ahead", [0, -1, 1.5])
def test_ahead_must_be_a_whole_number_of_items(ahead: Any) -> None:
    with pytest.raises(ValueError, match="ahead must be a whole number"):
        prefetch(iter([]), ahead=ahead)
