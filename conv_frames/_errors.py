"""Errors raised by conv_frames.

Every failure a caller can see is a :class:`ConvFramesError`; foreign errors
(requests, tenacity, pyarrow, OS errors while writing) are translated at the
boundary where they happen and chained with ``from``::

    ConvFramesError
    ├── ConfigurationError   bad argument or missing credentials (also ValueError)
    ├── APIError             the API answered with an error status
    ├── TransportError       the network failed or the answer could not be read
    │   └── RequestTimeout   no answer within the read or connect timeout
    ├── PaginationError      a next-page link that must not be followed
    ├── SchemaError          a page or record breaking the contract (also ValueError)
    ├── ExportError          the Parquet file could not be written
    │   └── DatasetLockedError  another export holds the dataset's lock
    ├── SnapshotError        a snapshot is missing, too new, or fails its checksums
    └── ServicesLoadError    some services of a load_services call failed

Messages never contain credentials: URLs are shown without user info, and
no header is ever quoted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "APIError",
    "ConfigurationError",
    "ConvFramesError",
    "DatasetLockedError",
    "ExportError",
    "PaginationError",
    "RequestTimeout",
    "SchemaError",
    "ServicesLoadError",
    "SnapshotError",
    "TransportError",
    "describe_storage_error",
    "storage_errors",
]

#: Statuses that say "try again later" rather than "this request is wrong".
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class ConvFramesError(Exception):
    """Root of every error conv_frames raises.

    Attributes:
        frame: Set on an error that stopped a presence fill (#5): the users
            with the presence fetched so far, the rest null. Pass it to
            ``fill_presence(frame, only_unfilled=True)`` to fetch the rest.
            None on every other error.
        unfilled: With ``frame``, the SIDs of the users not fetched yet.
    """

    frame: pd.DataFrame | None = None
    unfilled: tuple[str, ...] = ()


class ConfigurationError(ConvFramesError, ValueError):
    """An argument or an environment variable is missing or invalid."""


class APIError(ConvFramesError):
    """The API answered with an error status.

    Attributes:
        status: The HTTP status code.
        code: Twilio's error code, when the body carried one.
        message: Twilio's message, or a short description of the body.
        more_info: Twilio's link to the error's documentation, if any.
        url: The requested URL, without credentials.
        attempts: How many requests were sent before giving up.
        retry_after: Seconds the server asked to wait (``Retry-After``), if usable.
    """

    retry_after: float | None = None

    def __init__(
        self,
        status: int,
        message: str,
        *,
        url: str,
        code: int | None = None,
        more_info: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        self.url = url
        self.attempts = attempts
        super().__init__(self._describe())

    @property
    def is_transient(self) -> bool:
        """Whether the status is one that is retried (429 and the 5xx gateway set)."""
        return self.status in TRANSIENT_STATUSES

    def _describe(self) -> str:
        code = f" (Twilio error {self.code})" if self.code is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        more = f"; see {self.more_info}" if self.more_info else ""
        return f"HTTP {self.status}{code} from {self.url}{tries}: {self.message}{more}"

    def __str__(self) -> str:
        # Rebuilt on each call because ``attempts`` is filled in after retries.
        return self._describe()


class TransportError(ConvFramesError):
    """The request failed on the network, or its answer could not be read.

    Attributes:
        url: The requested URL, without credentials.
        attempts: How many requests were sent before giving up.
        transient: Whether trying again may succeed (a reset, a cut body).
    """

    def __init__(
        self, message: str, *, url: str, attempts: int = 1, transient: bool = True
    ) -> None:
        self.message = message
        self.url = url
        self.attempts = attempts
        self.transient = transient
        super().__init__(message)

    def __str__(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.message} ({self.url}){tries}"


class RequestTimeout(TransportError, TimeoutError):
    """The server did not answer within the configured timeout."""


class PaginationError(ConvFramesError):
    """A next-page link was refused: foreign origin, a loop, or too many pages."""


class SchemaError(ConvFramesError, ValueError):
    """A page envelope or a user record does not match the API's contract."""


class ExportError(ConvFramesError):
    """The Parquet export could not be written; any earlier file is untouched."""


class ServicesLoadError(ConvFramesError):
    """Some services of a :func:`load_services` call failed; the rest loaded.

    Every service was tried to the end, whatever happened to the others.

    Attributes:
        frames: The frame of each service that loaded, by service SID.
        errors: The error of each service that failed, by service SID.
    """

    def __init__(
        self, frames: Mapping[str, pd.DataFrame], errors: Mapping[str, Exception]
    ) -> None:
        self.frames = dict(frames)
        self.errors = dict(errors)
        failures = "".join(
            f"\n  {sid}: {type(error).__name__}: {error}"
            for sid, error in self.errors.items()
        )
        super().__init__(
            f"{len(self.errors)} of {len(self.frames) + len(self.errors)} services "
            f"failed to load; the {len(self.frames)} that loaded are in "
            f".frames:{failures}"
        )


class DatasetLockedError(ExportError):
    """Another run holds the dataset's lock; this run wrote nothing."""


class SnapshotError(ConvFramesError):
    """A snapshot is missing, too new to read, or fails its checksums."""


@functools.cache
def storage_errors() -> tuple[type[Exception], ...]:
    """The foreign errors of a filesystem whose storage failed.

    fsspec filesystems raise ``OSError``, except s3fs, which lets botocore's
    own errors through when no answer came (an endpoint that cannot be
    reached) or a request could not even be built.
    """
    try:
        # botocore ships no type information; only its base class is used.
        from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
    except ImportError:  # no S3 support installed
        return (OSError,)
    return (OSError, BotoCoreError)


def describe_storage_error(error: Exception) -> str:
    """Why storage failed, and what to check when the store was not reached."""
    if isinstance(error, OSError):
        return str(error.strerror or error)
    return (
        f"{error}; check the store's endpoint (endpoint_url in storage_options, "
        "or AWS_ENDPOINT_URL), the network and the credentials"
    )
