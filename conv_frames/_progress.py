"""Progress of long work: a tqdm bar where someone is watching, a callback otherwise.

Every loader takes ``progress``:

- ``None`` (the default) shows a bar only where someone can see it: stderr is a
  terminal, or the code runs in a Jupyter kernel. Cron jobs, CI and test runs
  stay quiet.
- ``True`` or ``False`` forces the bar on or off.
- A callable gets a :class:`ProgressEvent` after each step instead of a bar,
  for callers with their own interface.

tqdm is imported only when a bar is shown; ``tqdm.auto`` picks the notebook
widget where ipywidgets is installed and a text bar elsewhere. The library
never prints: bars write to stderr, everything else goes to the logger.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from ._errors import ConfigurationError

__all__ = [
    "Progress",
    "ProgressCallback",
    "ProgressEvent",
    "ProgressReporter",
    "check_progress",
    "progress_enabled",
]

Task = Literal["users", "presence"]

_DESCRIPTIONS: dict[Task, str] = {"users": "users", "presence": "presence"}


@dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of long work, handed to a progress callback.

    Attributes:
        task: ``"users"`` while pages of users are listed, ``"presence"``
            while users are fetched one by one.
        done: Users listed so far, or users whose presence is settled
            (filled, or given up on in lenient mode).
        total: How many there are in all, when known; None while listing,
            since the API does not say how many users a service has.
        elapsed: Seconds since the task started.
        pages: Pages listed so far (``"users"`` only).
        requests: HTTP requests sent so far, retries included.
        retries: Requests that repeated an earlier one after a fault or a 429.
        concurrency: The presence pool's current limit on requests in
            flight (``"presence"`` only).
        in_flight: Presence requests in flight now (``"presence"`` only);
            above ``concurrency`` for a moment after the limit is cut.
        finished: True on the last event of a task that completed.
    """

    task: Task
    done: int
    total: int | None
    elapsed: float
    pages: int = 0
    requests: int = 0
    retries: int = 0
    concurrency: int = 0
    in_flight: int = 0
    finished: bool = False

    @property
    def rate(self) -> float:
        """Items done per second so far (0.0 before any time has passed)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[ProgressEvent], None]
#: What a ``progress`` argument accepts: None (auto), a bool, or a callback.
Progress = bool | ProgressCallback | None


def check_progress(progress: object, *, name: str = "progress") -> None:
    """Refuse a ``progress`` other than None, True, False or a callable.

    A string such as ``"false"`` is truthy, and would show a bar it meant to hide.
    """
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise ConfigurationError(
        f"{name}={progress!r} is not supported; use None (a bar where someone "
        "watches), True or False (always or never a bar), or a callable that "
        "takes a ProgressEvent"
    )


def progress_enabled(progress: Progress) -> bool:
    """Whether ``progress`` asks for a bar or a callback.

    ``None`` means "where someone is watching": stderr is a terminal, or a
    Jupyter kernel runs the code.
    """
    if progress is None:
        return _stderr_is_terminal() or _in_jupyter_kernel()
    return callable(progress) or bool(progress)


class ProgressReporter:
    """Feeds one task's progress to a tqdm bar, a callback, or nowhere.

    Use it as a context manager; :meth:`finish` marks success, and leaving
    the block closes the bar either way.

    Args:
        progress: The caller's ``progress`` argument.
        task: Which work this is.
        total: How many items there are, when known.
        clock: Seconds, monotonic (tests may replace it).
    """

    def __init__(
        self,
        progress: Progress,
        *,
        task: Task,
        total: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_progress(progress)
        self.task = task
        self.total = total
        self._clock = clock
        self._started = clock()
        self._callback: ProgressCallback | None = None
        self._bar: Any = None
        if callable(progress):
            self._callback = progress
        elif progress_enabled(progress):
            self._bar = _open_bar(task, total)
        self.last: ProgressEvent | None = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """Whether anything listens (a bar or a callback)."""
        return self._bar is not None or self._callback is not None

    def update(self, done: int, **counts: int) -> None:
        """Report ``done`` items so far, with the task's counters."""
        if self.active:
            self._emit(self._event(done, counts, finished=False))

    def finish(self, done: int, **counts: int) -> None:
        """Report the task's final counts, marked finished."""
        if self.active:
            self._emit(self._event(done, counts, finished=True))

    def close(self) -> None:
        """Close the bar, if one is shown; safe to call twice."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _event(
        self, done: int, counts: dict[str, int], *, finished: bool
    ) -> ProgressEvent:
        return ProgressEvent(
            task=self.task,
            done=done,
            total=self.total,
            elapsed=self._clock() - self._started,
            finished=finished,
            **counts,
        )

    def _emit(self, event: ProgressEvent) -> None:
        self.last = event
        if self._callback is not None:
            self._callback(event)
        if self._bar is not None:
            self._bar.update(event.done - self._bar.n)
            self._bar.set_postfix(_postfix(event), refresh=event.finished)


def _open_bar(task: Task, total: int | None) -> Any:
    with warnings.catch_warnings():
        # Without ipywidgets, tqdm.auto warns and falls back to the text bar,
        # which is what we want; the warning would only clutter the notebook.
        warnings.simplefilter("ignore")
        # tqdm ships no type hints, and types-tqdm is not a dependency.
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(
        total=total,
        desc=_DESCRIPTIONS[task],
        unit=" users",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2,
    )


def _postfix(event: ProgressEvent) -> dict[str, int]:
    if event.task == "users":
        return {"pages": event.pages, "retries": event.retries}
    return {
        "in_flight": event.in_flight,
        "limit": event.concurrency,
        "retries": event.retries,
    }


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _in_jupyter_kernel() -> bool:
    # The same test tqdm.autonotebook uses: a Jupyter kernel has loaded its shell.
    return "ipykernel.zmqshell" in sys.modules
