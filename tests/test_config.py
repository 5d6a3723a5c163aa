"""Settings: credentials, endpoint and argument checks, all before any request."""

from __future__ import annotations

from typing import Any

import pytest
from scripted import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID, ScriptedServer

import conv_frames
from conv_frames import ConfigurationError
from conv_frames._config import Credentials, resolve_base_url, resolve_credentials

KEY_SID = "SK" + "b2" * 16
KEY_SECRET = "key_secret_FAKE_0000"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "f" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "env-token")

    chosen = resolve_credentials(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)

    assert chosen == Credentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN)


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)

    assert resolve_credentials() == Credentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN)


def test_api_key_from_the_environment_needs_the_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_API_KEY", KEY_SID)
    monkeypatch.setenv("TWILIO_API_SECRET", KEY_SECRET)
    with pytest.raises(ConfigurationError, match="set TWILIO_ACCOUNT_SID"):
        resolve_credentials()

    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    assert resolve_credentials() == Credentials(ACCOUNT_SID, KEY_SID, KEY_SECRET)


def test_api_key_arguments_win_over_an_environment_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)

    chosen = resolve_credentials(api_key=KEY_SID, api_secret=KEY_SECRET)

    assert chosen == Credentials(ACCOUNT_SID, KEY_SID, KEY_SECRET)


def test_missing_credentials_name_the_variables_to_set() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_credentials()

    message = str(caught.value)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY"):
        assert name in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"api_key": KEY_SID, "account_sid": ACCOUNT_SID}, "api_secret / TWILIO_API"),
        (
            {"api_secret": KEY_SECRET, "account_sid": ACCOUNT_SID},
            "api_key / TWILIO_API",
        ),
        (
            {"api_key": "key", "api_secret": "s", "account_sid": ACCOUNT_SID},
            r"match \^SK",
        ),
        ({"auth_token": AUTH_TOKEN, "account_sid": "AC123"}, "'AC123' is not an acc"),
        ({"auth_token": "", "account_sid": ACCOUNT_SID}, "auth token is empty"),
    ],
)
def test_half_or_malformed_credentials_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve_credentials(**options)

    assert KEY_SECRET not in str(caught.value)


def test_credentials_repr_masks_the_secret() -> None:
    credentials = Credentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN)
    client = conv_frames.Client(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)

    for text in (repr(credentials), str(credentials), repr(client)):
        assert AUTH_TOKEN not in text
    assert "password='***'" in repr(credentials)
    client.close()


@pytest.mark.parametrize(
    ("region", "edge", "expected"),
    [
        (None, None, "https://conversations.twilio.com"),
        ("ie1", None, "https://conversations.ie1.twilio.com"),
        ("au1", "sydney", "https://conversations.sydney.au1.twilio.com"),
        (None, "dublin", "https://conversations.dublin.us1.twilio.com"),
    ],
)
def test_region_and_edge_shape_the_host_like_twilios_sdks(
    region: str | None, edge: str | None, expected: str
) -> None:
    assert resolve_base_url(region=region, edge=edge) == expected
    environ = {"TWILIO_REGION": region or "", "TWILIO_EDGE": edge or ""}
    assert resolve_base_url(environ=environ) == expected


def test_base_url_wins_over_region() -> None:
    url = resolve_base_url("http://127.0.0.1:8080/", region="ie1")

    assert url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://example.com", "absolute http"),
        ("conversations.twilio.com", "absolute http"),
        ("https://AC1:secret@conversations.twilio.com", "must not carry credentials"),
        ("https://conversations.twilio.com?x=1", "query"),
        ("http://conversations.twilio.com", "clear text"),
    ],
)
def test_unsafe_base_urls_are_refused(base_url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve_base_url(base_url)

    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"service_sid": "IS123"}, r"must\s+match \^IS\[0-9a-fA-F\]\{32\}\$"),
        ({"service_sid": "US" + "0" * 32}, "not a Conversations service SID"),
        ({"page_size": 0}, "page_size=0 is out of range"),
        ({"page_size": 1001}, "page_size=1001 is out of range"),
        ({"page_size": True}, "page_size=True is out of range"),
        ({"max_attempts": 0}, "max_attempts=0 must be an integer >= 1"),
        ({"timeout": -1}, r"timeout=-1 must be seconds \(more than 0"),
        ({"timeout": (1.0,)}, r"timeout=\(1.0,\) must be seconds"),
        ({"timeout": float("inf")}, "timeout=inf must be seconds"),
        ({"max_pages": 0}, "max_pages=0 must be an integer >= 1"),
        ({"max_pages": "2"}, "max_pages='2' must be an integer >= 1"),
        ({"dtype_backend": "numpy"}, "dtype_backend='numpy' is not supported"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"service_sid": SERVICE_SID, **options}
    with ScriptedServer([]) as server:
        with pytest.raises(ConfigurationError, match=message):
            conv_frames.load_users(
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                base_url=server.base_url,
                **arguments,
            )

    assert server.requests == []


def test_each_credential_falls_back_to_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API key passed as an argument takes its secret from the environment."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_API_SECRET", KEY_SECRET)

    chosen = resolve_credentials(api_key=KEY_SID)

    assert chosen == Credentials(ACCOUNT_SID, KEY_SID, KEY_SECRET)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"account_sid": 12345, "auth_token": AUTH_TOKEN}, "account_sid must be a str"),
        ({"account_sid": ACCOUNT_SID, "auth_token": 12345}, "auth_token must be a str"),
        ({"account_sid": ACCOUNT_SID, "api_key": KEY_SID, "api_secret": b"x"}, "bytes"),
    ],
)
def test_credentials_must_be_text(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve_credentials(**options)


def test_a_token_basic_auth_cannot_send_is_refused_without_quoting_it() -> None:
    token = "SuperSecret€Token"
    with pytest.raises(ConfigurationError, match="outside Latin-1") as caught:
        resolve_credentials(account_sid=ACCOUNT_SID, auth_token=token)

    assert token not in str(caught.value) + repr(caught.value)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://127.0.0.1:abc", "not a valid URL"),
        ("http://127.0.0.1:8080 ", "white space"),
        ("https://conversations.twilio.com/v1", "without /v1"),
        ("http://user:pw@127.0.0.1:8080", "must not carry credentials"),
    ],
)
def test_malformed_base_urls_are_configuration_errors(
    base_url: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve_base_url(base_url)

    assert "pw" not in str(caught.value)
