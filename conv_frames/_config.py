"""Settings: credentials and the API endpoint, from arguments then the environment.

Everything here is checked before the first request, so a typo costs no
network round trip and leaves nothing half done.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_HOST",
    "MAX_PAGE_SIZE",
    "Credentials",
    "check_count",
    "check_page_size",
    "check_seconds",
    "check_service_sid",
    "named",
    "resolve_base_url",
    "resolve_credentials",
]

DEFAULT_HOST = "conversations.twilio.com"
#: The largest PageSize Twilio's list endpoints have ever accepted. The spec caps
#: user lists at 50; the loader follows ``meta.page_size`` whatever the server uses.
MAX_PAGE_SIZE = 1000

_SERVICE_SID = re.compile(r"IS[0-9a-fA-F]{32}")
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_API_KEY = re.compile(r"SK[0-9a-fA-F]{32}")

_HOW_TO = (
    "pass account_sid and auth_token (or api_key, api_secret and account_sid), "
    "or set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
    "(or TWILIO_API_KEY, TWILIO_API_SECRET and TWILIO_ACCOUNT_SID)"
)


@dataclass(frozen=True)
class Credentials:
    """HTTP basic credentials for one account; the secret never shows in a repr.

    Attributes:
        account_sid: Whose data is read (``AC...``).
        username: The account SID, or the API key SID when a key is used.
        password: The auth token or the API key secret.
    """

    account_sid: str
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"Credentials(account_sid={self.account_sid!r}, "
            f"username={self.username!r}, password='***')"
        )


def resolve_credentials(
    *,
    account_sid: str | None = None,
    auth_token: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Pick credentials: arguments first, then ``TWILIO_*`` variables.

    Raises:
        ConfigurationError: Nothing usable was given, or only half of a pair.
    """
    env = os.environ if environ is None else environ
    sid = _pick(account_sid, "account_sid", env, "TWILIO_ACCOUNT_SID")
    token = _pick(auth_token, "auth_token", env, "TWILIO_AUTH_TOKEN")
    key = _pick(api_key, "api_key", env, "TWILIO_API_KEY")
    secret = _pick(api_secret, "api_secret", env, "TWILIO_API_SECRET")
    # The kind of credential named by an argument wins; then the environment's
    # API key, then its auth token. Each value is its argument, else its variable.
    if api_key is not None or api_secret is not None:
        return _key_credentials(sid, key, secret)
    if auth_token is not None:
        return _token_credentials(sid, auth_token)
    if key or secret:
        return _key_credentials(sid, key, secret)
    if token:
        return _token_credentials(sid, token)
    raise ConfigurationError(f"no Twilio credentials found: {_HOW_TO}")


def _pick(
    argument: object, name: str, env: Mapping[str, str], variable: str
) -> str | None:
    """An argument if given (it must be text), else the environment variable."""
    if argument is None:
        return env.get(variable) or None
    if not isinstance(argument, str):
        raise ConfigurationError(
            f"{name} must be a string, not {type(argument).__name__}"
        )
    return argument


def resolve_base_url(
    base_url: str | None = None,
    *,
    region: str | None = None,
    edge: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return the API root URL, without a trailing slash.

    ``base_url`` wins (the emulator, a proxy). Otherwise the host is built the
    way Twilio's SDKs build it from ``region`` and ``edge`` (arguments, then
    ``TWILIO_REGION`` and ``TWILIO_EDGE``), as
    ``conversations.{edge}.{region}.twilio.com``, with region ``us1`` when only
    an edge is given.
    """
    if base_url is not None:
        return _check_base_url(base_url)
    env = os.environ if environ is None else environ
    region = region or env.get("TWILIO_REGION") or None
    edge = edge or env.get("TWILIO_EDGE") or None
    if edge and not region:
        region = "us1"
    labels = ["conversations", edge, region, "twilio", "com"]
    for label in (edge, region):
        if label is not None and not re.fullmatch(r"[a-z0-9-]+", label):
            raise ConfigurationError(
                f"region/edge {label!r} is not a host label; use names such as "
                "'ie1' or 'dublin'"
            )
    return "https://" + ".".join(part for part in labels if part)


def check_service_sid(service_sid: object) -> str:
    """Refuse a service SID that cannot be one, before any request."""
    if not isinstance(service_sid, str) or not _SERVICE_SID.fullmatch(service_sid):
        raise ConfigurationError(
            f"service_sid {service_sid!r} is not a Conversations service SID; it must "
            "match ^IS[0-9a-fA-F]{32}$ (find it in the Twilio console under "
            "Conversations > Services)"
        )
    return service_sid


def check_page_size(page_size: object, name: str = "page_size") -> int:
    """Refuse a page size outside 1..1000, before any request."""
    if (
        isinstance(page_size, bool)
        or not isinstance(page_size, int)
        or not 1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise ConfigurationError(
            f"{named(name, page_size)} is out of range; use an integer from 1 to "
            f"{MAX_PAGE_SIZE} (the API caps user pages at 50 and says so in "
            "meta.page_size)"
        )
    return page_size


def named(name: str, value: object) -> str:
    """How a message shows a setting: ``keep=0``, or ``--keep 0`` for a flag.

    The checks below take the name to show, so that the command line runs the
    library's own checks on its flags and its messages name the flags.
    """
    return f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"


def check_count(value: object, name: str, meaning: str = "") -> int:
    """Refuse anything but a whole number >= 1; ``meaning`` ends the message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{named(name, value)} must be an integer >= 1{meaning}"
        )
    return value


def check_seconds(value: object, name: str, meaning: str = "") -> float:
    """Refuse anything but a finite number of seconds >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{named(name, value)} must be a finite number of seconds >= 0{meaning}"
        )
    return float(value)


def _token_credentials(account_sid: str | None, auth_token: str) -> Credentials:
    sid = _check_account_sid(account_sid)
    if not auth_token:
        raise ConfigurationError(f"the auth token is empty: {_HOW_TO}")
    _check_sendable(auth_token, "the auth token")
    return Credentials(account_sid=sid, username=sid, password=auth_token)


def _key_credentials(
    account_sid: str | None, api_key: str | None, api_secret: str | None
) -> Credentials:
    if not api_key or not api_secret:
        missing = (
            "api_key / TWILIO_API_KEY"
            if not api_key
            else "api_secret / TWILIO_API_SECRET"
        )
        raise ConfigurationError(
            f"an API key needs both its SID and its secret; {missing} is missing"
        )
    if not _API_KEY.fullmatch(api_key):
        raise ConfigurationError(
            f"api_key {_shown(api_key, 'SK')} is not an API key SID; it must match "
            "^SK[0-9a-fA-F]{32}$"
        )
    sid = _check_account_sid(account_sid)
    _check_sendable(api_secret, "the API key secret")
    return Credentials(account_sid=sid, username=api_key, password=api_secret)


def _check_sendable(secret: str, what: str) -> None:
    """Refuse a secret HTTP basic auth cannot carry, without ever quoting it."""
    # Raised outside the except block, so the encoding error (whose repr
    # holds the secret) is not kept as the context.
    if not all(ord(character) < 256 for character in secret):
        raise ConfigurationError(
            f"{what} has characters that HTTP basic auth cannot send (outside "
            "Latin-1); check that it was copied whole and nothing was added"
        )


def _check_account_sid(account_sid: str | None) -> str:
    if not account_sid:
        raise ConfigurationError(
            "the account SID is missing: pass account_sid or set TWILIO_ACCOUNT_SID"
        )
    if not _ACCOUNT_SID.fullmatch(account_sid):
        raise ConfigurationError(
            f"account_sid {_shown(account_sid, 'AC')} is not an account SID; "
            "it must match ^AC[0-9a-fA-F]{32}$"
        )
    return account_sid


def _check_base_url(base_url: object) -> str:
    if not isinstance(base_url, str):
        raise ConfigurationError(
            f"base_url must be a string, not {type(base_url).__name__}"
        )
    problem = _base_url_problem(base_url)
    if problem:
        # Shown without any user info, which may hold a secret.
        shown = base_url.rpartition("@")[2] if "@" in base_url else base_url
        raise ConfigurationError(f"base_url {shown!r} is refused: {problem}")
    return base_url.rstrip("/")


def _base_url_problem(base_url: str) -> str | None:
    if any(character.isspace() for character in base_url):
        return "it contains white space"
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not one
    except ValueError as error:
        return f"it is not a valid URL ({error})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "it must be an absolute http(s) URL, like https://conversations.twilio.com"
        )
    if parts.username is not None or parts.password is not None:
        return "it must not carry credentials; pass those as arguments or TWILIO_*"
    if parts.query or parts.fragment:
        return "it must not have a query or a fragment"
    if parts.path.rstrip("/").endswith("/v1"):
        return "it is the API root, without /v1 (the loader adds /v1/Services/...)"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return (
            "plain http is only allowed on this machine (127.0.0.1, localhost); "
            "credentials would cross the network in clear text, so use https"
        )
    return None


def _shown(value: str, prefix: str) -> str:
    """Quote a malformed SID, unless it may be a secret given in its place.

    A value that does not even start with the SID's prefix may be the token or
    secret in the wrong argument or variable (swapped TWILIO_* settings, #3), so
    only its length is told.
    """
    if value.startswith(prefix):
        return repr(value)
    return f"(a {len(value)}-character value not starting with {prefix!r}, not shown)"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
