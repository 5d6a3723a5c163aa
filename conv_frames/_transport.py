"""One GET of one page: auth, timeouts, the retry policy and error mapping.

This is the single boundary where requests' and tenacity's exceptions become
conv_frames errors. A retried request is exactly the same URL again.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
import urllib3
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from ._config import Credentials
from ._errors import APIError, RequestTimeout, SchemaError, TransportError

__all__ = ["LoadStats", "RetryPolicy", "Transport", "parse_retry_after", "redact_url"]

logger = logging.getLogger(__name__)

Timeout = float | tuple[float, float]
Sleep = Callable[[float], None]

_USER_AGENT = "conv-frames/0.1 (+python-requests)"
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a transient fault becomes an error.

    Attributes:
        max_attempts: Requests per URL, the first one included.
        max_retry_wait: Longest single wait in seconds, ``Retry-After`` included.
        max_total_wait: Budget of waiting for one URL, in seconds.
        backoff_initial: First backoff wait in seconds, doubled each retry.
        backoff_jitter: Up to this many random seconds added to each backoff.
    """

    max_attempts: int = 5
    max_retry_wait: float = 60.0
    max_total_wait: float = 300.0
    backoff_initial: float = 0.5
    backoff_jitter: float = 0.5


@dataclass
class LoadStats:
    """Counters of one load, reported in ``DataFrame.attrs`` and the CLI summary."""

    requests: int = 0
    retries: int = 0
    pages: int = 0


class Transport:
    """A pooled session that GETs JSON with retries, for one set of credentials."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: Timeout,
        retry: RetryPolicy,
        sleep: Sleep = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        self.timeout = timeout
        self.retry = retry
        self._session = session or requests.Session()
        self._session.auth = _BasicAuth(credentials)
        self._session.headers.update(
            {"Accept": "application/json", "User-Agent": _USER_AGENT}
        )
        self._retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(retry.max_attempts)
            | _stop_after_total_wait(retry.max_total_wait),
            wait=_wait_retry_after(
                wait_exponential_jitter(
                    multiplier=retry.backoff_initial,
                    max=retry.max_retry_wait,
                    jitter=retry.backoff_jitter,
                ),
                cap=retry.max_retry_wait,
            ),
            sleep=sleep,
            reraise=True,
        )

    def __repr__(self) -> str:
        return f"<Transport timeout={self.timeout!r} retry={self.retry!r}>"

    def close(self) -> None:
        """Release the pooled connections."""
        self._session.close()

    def get_json(self, url: str, stats: LoadStats) -> Any:
        """GET ``url`` and decode its JSON body, retrying transient faults.

        Requests and retries are counted in ``stats``.

        Raises:
            APIError: An error status, after retries when it was transient.
            TransportError: The network failed or the body was not JSON.
            SchemaError: The body was JSON but nested beyond what can be decoded.
        """

        def before_sleep(state: RetryCallState) -> None:
            stats.retries += 1
            self._log_retry(state)

        retrying = self._retrying.copy(before_sleep=before_sleep)
        try:
            return retrying(self._get_once, url, stats)
        except (APIError, TransportError) as error:
            error.attempts = int(retrying.statistics.get("attempt_number", 1))
            raise

    def _get_once(self, url: str, stats: LoadStats) -> Any:
        stats.requests += 1
        shown = redact_url(url)
        try:
            response = self._session.get(
                url, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as error:
            raise _network_error(error, shown) from error
        logger.debug(
            "GET %s -> %d (%d bytes)",
            shown,
            response.status_code,
            len(response.content),
        )
        if response.status_code != 200:
            raise _status_error(response, shown)
        return _decode_body(response, shown)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "retrying after %s (attempt %d of %d, waiting %.2f s): %s",
            _fault_name(error),
            state.attempt_number,
            self.retry.max_attempts,
            wait,
            getattr(error, "url", "?"),
        )


def parse_retry_after(
    value: str | None, *, now: datetime | None = None
) -> float | None:
    """Read a ``Retry-After`` header as seconds to wait, or None if unusable.

    Both forms of RFC 9110 are read: delay-seconds (fractions tolerated) and an
    HTTP date. A date in the past gives 0. Negative numbers, ``inf``/``nan`` and
    any other text are unusable, so the caller falls back to its backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def redact_url(url: str) -> str:
    """Drop user info from a URL so it can be logged or put in a message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class _BasicAuth(requests.auth.AuthBase):
    """Basic auth with the header built once; its repr hides the secret."""

    def __init__(self, credentials: Credentials) -> None:
        self._header = requests.auth._basic_auth_str(
            credentials.username, credentials.password
        )
        self._username = credentials.username

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return f"<BasicAuth username={self._username!r} password='***'>"


class _stop_after_total_wait(stop_base):
    """Stop when the next wait would take the total wait past ``budget`` seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.budget


class _wait_retry_after(wait_base):
    """Wait what the server asked for in ``Retry-After``, else the fallback, capped."""

    def __init__(self, fallback: wait_base, *, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(error, "retry_after", None)
        wait = self.fallback(retry_state) if asked is None else asked
        return min(max(wait, 0.0), self.cap)


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, APIError):
        return error.is_transient
    return isinstance(error, TransportError) and error.transient


def _network_error(error: requests.RequestException, url: str) -> TransportError:
    if isinstance(error, requests.Timeout) or _caused_by_read_timeout(error):
        return RequestTimeout("request timed out waiting for the server", url=url)
    reason = type(error).__name__
    transient = isinstance(
        error,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    )
    return TransportError(
        f"request failed on the network ({reason})", url=url, transient=transient
    )


def _caused_by_read_timeout(error: BaseException) -> bool:
    # requests reports a read timeout while streaming the body as a
    # ConnectionError wrapping urllib3's ReadTimeoutError.
    return any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in error.args
    )


def _status_error(response: requests.Response, url: str) -> APIError:
    status = response.status_code
    if 300 <= status < 400:
        location = redact_url(response.headers.get("Location", "(no Location header)"))
        return APIError(
            status,
            f"redirect to {location} not followed: credentials are only sent to the "
            "origin the load started on; point base_url at the final host instead",
            url=url,
        )
    payload = _error_payload(response)
    error = APIError(
        status,
        str(payload.get("message") or _describe_body(response)),
        url=url,
        code=_int_or_none(payload.get("code")),
        more_info=payload.get("more_info")
        if isinstance(payload.get("more_info"), str)
        else None,
    )
    error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error


def _decode_body(response: requests.Response, url: str) -> Any:
    body = response.content
    if not body.strip():
        raise TransportError(
            "HTTP 200 answer has an empty body, not JSON", url=url, transient=True
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):
            # Complete, well-formed so far, and too deep: retrying cannot help.
            raise SchemaError(
                f"the page from {url} nests JSON deeper than can be "
                "decoded (1024 levels)"
            ) from None
        raise TransportError(
            f"HTTP 200 answer is not JSON ({_describe_body(response)})",
            url=url,
            transient=True,
        ) from None


def _error_payload(response: requests.Response) -> dict[str, Any]:
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _describe_body(response: requests.Response) -> str:
    kind = response.headers.get("Content-Type", "no Content-Type")
    return f"{len(response.content)} bytes of {kind}"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fault_name(error: BaseException | None) -> str:
    if isinstance(error, APIError):
        return f"HTTP {error.status}"
    return type(error).__name__ if error else "an unknown fault"
