"""Fault plans: which requests the emulator answers badly, and how.

A :class:`Fault` names one kind of failure and its options. A
:class:`FaultPlan` decides, for each request the server receives (counted
from 0), whether a fault replaces the real answer: either on a schedule
(``at``) or at random with a seeded rate. Faults never touch paging state,
so retrying the same URL after a fault gets the real page.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict, TypeVar, cast

__all__ = [
    "DEFAULT_RANDOM_KINDS",
    "FAULT_KINDS",
    "Fault",
    "FaultPlan",
    "RetryAfterForm",
]

RetryAfterForm = Literal["seconds", "http_date", "absent", "text"]

#: Kinds that answer with an error status (JSON body unless ``html``).
STATUS_KINDS = {
    "status_429": 429,
    "status_500": 500,
    "status_502": 502,
    "status_503": 503,
    "status_504": 504,
    "html_502": 502,
    "html_503": 503,
    "html_504": 504,
}

#: Every fault kind the emulator can inject.
FAULT_KINDS = (
    *STATUS_KINDS,
    "reset_before_body",
    "reset_mid_body",
    "short_body",
    "stall",
    "html_200",
    "empty_200",
)

#: Kinds a random plan draws from unless told otherwise: the failures a
#: client is expected to retry. ``stall`` is left out because its default
#: wait (30 s) would dominate any test that did not ask for it.
DEFAULT_RANDOM_KINDS = (
    "status_429",
    "status_500",
    "status_502",
    "status_503",
    "status_504",
    "reset_before_body",
    "reset_mid_body",
    "short_body",
)

_RETRY_AFTER_FORMS = ("seconds", "http_date", "absent", "text")

DEFAULT_RETRY_AFTER = 1
DEFAULT_STALL_SECONDS = 30.0
DEFAULT_FRACTION = 0.5

_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Fault:
    """One injected failure, answered instead of the real response.

    Attributes:
        kind: One of :data:`FAULT_KINDS`.
        retry_after: Seconds announced by a ``status_429`` fault.
        retry_after_form: How ``status_429`` sends ``Retry-After``:
            ``"seconds"`` (an integer), ``"http_date"``, ``"absent"``, or
            ``"text"`` for ``retry_after_text`` as it is.
        retry_after_text: The ``Retry-After`` value of the ``"text"`` form:
            what the other forms cannot send, such as ``"1.5"``, ``"-5"``, a
            date in the past or ``"soon"``.
        html: For ``status_5xx`` kinds, answer with an HTML gateway page
            instead of Twilio's JSON error (the ``html_5xx`` kinds imply it).
        seconds: How long ``stall`` waits before the status line.
        fraction: Share of the body ``reset_mid_body`` sends before closing.
    """

    kind: str
    retry_after: int = DEFAULT_RETRY_AFTER
    retry_after_form: RetryAfterForm = "seconds"
    retry_after_text: str = ""
    html: bool = False
    seconds: float = DEFAULT_STALL_SECONDS
    fraction: float = DEFAULT_FRACTION

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; valid kinds are "
                + ", ".join(FAULT_KINDS)
            )
        if self.retry_after_form not in _RETRY_AFTER_FORMS:
            raise ValueError(
                f"retry_after_form must be one of {', '.join(_RETRY_AFTER_FORMS)}, "
                f"got {self.retry_after_form!r}"
            )
        if not _is_header_value(self.retry_after_text):
            raise ValueError(
                "retry_after_text must be one header line of Latin-1 text, "
                f"got {self.retry_after_text!r}"
            )
        if self.retry_after < 0 or self.seconds < 0:
            raise ValueError("retry_after and seconds must be zero or more")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction}")
        if self.html and not self.kind.startswith("status_5"):
            raise ValueError(
                f"html=True applies to status_5xx kinds, not {self.kind!r}"
            )

    @property
    def status(self) -> int | None:
        """The HTTP status this fault answers with, or None if it sends none."""
        if self.kind in STATUS_KINDS:
            return STATUS_KINDS[self.kind]
        if self.kind in ("html_200", "empty_200"):
            return 200
        return None

    @property
    def is_html(self) -> bool:
        """Whether the error status comes with an HTML page rather than JSON."""
        return self.html or self.kind.startswith("html_5")


FaultLike = Fault | str


def _is_header_value(text: str) -> bool:
    """Whether ``text`` can be sent as one header value (no line breaks)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return "\r" not in text and "\n" not in text


def _as_fault(value: FaultLike) -> Fault:
    return value if isinstance(value, Fault) else Fault(value)


class FaultPlan:
    """Decides per request whether, and how, to answer with a fault.

    Args:
        at: Faults scheduled by 0-based request index (every request the
            server receives counts). A sequence at index ``i`` schedules its
            faults on consecutive requests ``i``, ``i + 1``, and so on. Kinds
            may be given as names.
        rate: Probability in ``[0, 1]`` that any other request is faulted.
        seed: Seed of the random draws; request ``i`` always draws the same
            way, so a sequential client sees the same faults on every run.
        kinds: What a random fault may be, drawn uniformly.

    Raises:
        ValueError: An unknown kind, a negative index, overlapping scheduled
            faults or a rate outside ``[0, 1]``.

    Example:
        >>> plan = FaultPlan(at={0: ["status_503", "status_503"]})
        >>> [plan.fault_for(i) and plan.fault_for(i).kind for i in range(3)]
        ['status_503', 'status_503', None]
    """

    def __init__(
        self,
        at: Mapping[int, FaultLike | Sequence[FaultLike]] | None = None,
        *,
        rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[FaultLike] = DEFAULT_RANDOM_KINDS,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        self._schedule = _schedule(at or {})
        self._rate = rate
        self._seed = seed
        self._kinds = tuple(_as_fault(kind) for kind in kinds)
        if rate > 0 and not self._kinds:
            raise ValueError("a random fault plan needs at least one kind")

    def __repr__(self) -> str:
        kinds = "+".join(fault.kind for fault in self._kinds)
        return (
            f"FaultPlan(at={len(self._schedule)} scheduled, rate={self._rate}, "
            f"seed={self._seed}, kinds={kinds})"
        )

    @property
    def schedule(self) -> Mapping[int, Fault]:
        """The scheduled faults, one per request index."""
        return dict(self._schedule)

    def fault_for(self, index: int) -> Fault | None:
        """Return the fault for request ``index``, or None to answer normally."""
        scheduled = self._schedule.get(index)
        if scheduled is not None or self._rate == 0.0:
            return scheduled

        # One generator per index keeps the draw of request i independent of
        # how many requests came before it, whatever their order.
        rng = random.Random(f"{self._seed}:{index}")
        if rng.random() >= self._rate:
            return None
        return self._kinds[rng.randrange(len(self._kinds))]

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Build a plan from a command-line string.

        The string is comma-separated ``key=value`` items: ``rate=0.2``,
        ``seed=7``, ``kinds=status_503+reset_mid_body``, or a request index
        and a fault: ``0=status_429``. A fault may carry options after
        colons, ``3=status_429:retry_after=2:retry_after_form=http_date``,
        and several faults joined by ``+`` land on consecutive requests.

        Args:
            text: The plan, such as ``"rate=0.1,seed=3,kinds=status_503"``.

        Raises:
            ValueError: The text names an unknown key, kind or option, or a
                value does not parse; the message quotes the offending item.
        """
        options: dict[str, str] = {}
        at: dict[int, Sequence[Fault]] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not value:
                raise ValueError(f"fault plan item {item!r} is not key=value")
            key = key.strip()
            if key.isdigit():
                at[int(key)] = [_parse_fault(spec, item) for spec in value.split("+")]
            elif key in ("rate", "seed", "kinds"):
                options[key] = value.strip()
            else:
                raise ValueError(
                    f"fault plan item {item!r}: unknown key {key!r}; use rate, seed, "
                    "kinds or a request index"
                )
        return cls(at, **_random_options(options))


def _schedule(at: Mapping[int, FaultLike | Sequence[FaultLike]]) -> dict[int, Fault]:
    schedule: dict[int, Fault] = {}
    for start, value in sorted(at.items()):
        if start < 0:
            raise ValueError(f"request indexes start at 0, got {start}")
        faults = [value] if isinstance(value, Fault | str) else list(value)
        for offset, fault in enumerate(faults):
            if start + offset in schedule:
                raise ValueError(
                    f"two faults are scheduled on request {start + offset}"
                )
            schedule[start + offset] = _as_fault(fault)
    return schedule


class _RandomOptions(TypedDict):
    rate: float
    seed: int
    kinds: Sequence[FaultLike]


def _random_options(options: Mapping[str, str]) -> _RandomOptions:
    kinds = options.get("kinds")
    return {
        "rate": _convert(float, options.get("rate", "0"), "rate"),
        "seed": _convert(int, options.get("seed", "0"), "seed"),
        "kinds": DEFAULT_RANDOM_KINDS
        if kinds is None
        else [_parse_fault(spec, f"kinds={kinds}") for spec in kinds.split("+")],
    }


def _parse_fault(spec: str, item: str) -> Fault:
    """Parse ``kind[:option=value...]``; ``item`` is quoted in errors."""
    kind, *settings = spec.strip().split(":")
    try:
        return _fault_from_text(kind.strip(), _fault_options(settings))
    except ValueError as error:
        raise ValueError(f"fault plan item {item!r}: {error}") from None


def _fault_options(settings: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in _OPTION_NAMES:
            raise ValueError(
                f"bad option {setting!r}; options are "
                + ", ".join(f"{option}=..." for option in _OPTION_NAMES)
            )
        options[name] = value
    return options


def _fault_from_text(kind: str, options: Mapping[str, str]) -> Fault:
    retry_after = options.get("retry_after", str(DEFAULT_RETRY_AFTER))
    seconds = options.get("seconds", str(DEFAULT_STALL_SECONDS))
    fraction = options.get("fraction", str(DEFAULT_FRACTION))
    return Fault(
        kind,
        retry_after=_convert(int, retry_after, "retry_after"),
        retry_after_form=cast(
            RetryAfterForm, options.get("retry_after_form", "seconds")
        ),
        retry_after_text=options.get("retry_after_text", ""),
        html=_flag(options.get("html", "false")),
        seconds=_convert(float, seconds, "seconds"),
        fraction=_convert(float, fraction, "fraction"),
    )


def _convert(kind: Callable[[str], _N], value: str, name: str) -> _N:
    try:
        return kind(value)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {expected}, got {value!r}") from None


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"html must be true or false, got {value!r}")


_OPTION_NAMES = (
    "retry_after",
    "retry_after_form",
    "retry_after_text",
    "html",
    "seconds",
    "fraction",
)
