"""The Conversations v1 resources the emulator serves, and its basic auth.

Routes (all ``GET``):

- ``/v1/Services``: list services (``ListService``).
- ``/v1/Services/{ChatServiceSid}/Users``: list users (``ListServiceUser``).
- ``/v1/Services/{ChatServiceSid}/Users/{Sid}``: fetch one user by SID or
  identity (``FetchServiceUser``), with presence.
- ``/v1/Users`` and ``/v1/Users/{Sid}``: the same for the account's default
  service, the first one (``ListUser``, ``FetchUser``); as on Twilio, their
  records carry URLs under ``/v1/Users``.
- ``/v1/Configuration``: the account's settings, which name the default
  service (``FetchConfiguration``).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import orjson

from ._data import Credentials, presence_of
from ._pages import Listing, Pager
from ._replies import Body, Reply, twilio_error

__all__ = ["AUTHENTICATE", "Api", "basic_authorization", "not_found"]

Record = Mapping[str, Any]

#: ``ListService`` allows pages of up to 100 services.
SERVICES_PAGE_CAP = 100

NOT_FOUND = 20404
METHOD_NOT_ALLOWED = 20004

#: Twilio's answer to missing or wrong credentials.
AUTHENTICATE = twilio_error(
    401, 20003, "Authenticate", (("WWW-Authenticate", 'Basic realm="Twilio API"'),)
)


def basic_authorization(username: str, password: str) -> str:
    """Return the ``Authorization`` header value for HTTP basic auth."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class Api:
    """Routes a request to its resource and renders the answer.

    Args:
        credentials: The account's credentials; both pairs are accepted.
        services: Service records, the first being the default service.
        users: Each service's user records (as served), by service SID.
        base_url: Absolute origin of every URL in an answer.
        page_size_cap: Largest page of users the server sends.
        reachability: The services' ``reachability_enabled``.
        secret: Key that signs page tokens.
    """

    def __init__(
        self,
        *,
        credentials: Credentials,
        services: Sequence[Record],
        users: Mapping[str, Sequence[Record]],
        base_url: str,
        page_size_cap: int,
        reachability: bool,
        secret: bytes,
    ) -> None:
        self._pairs = {
            (credentials.account_sid, credentials.auth_token),
            (credentials.api_key, credentials.api_secret),
        }
        self._headers = {basic_authorization(*pair) for pair in self._pairs}
        self._pager = Pager(base_url, secret)
        self._reachability = reachability
        self._services = Listing(
            "/v1/Services", "services", services, SERVICES_PAGE_CAP
        )
        self._listings = {
            sid: Listing(f"/v1/Services/{sid}/Users", "users", records, page_size_cap)
            for sid, records in users.items()
        }
        default = str(services[0]["sid"])
        self._default = Listing(
            "/v1/Users",
            "users",
            users[default],
            page_size_cap,
            _default_service_view(f"{base_url}/v1/Users/"),
        )
        self._indexes: dict[str, dict[str, Record]] = {}
        self._index_lock = threading.Lock()
        self._default_sid = default
        self._configuration = Body(
            orjson.dumps(_configuration(credentials.account_sid, default, base_url))
        )

    def is_authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries accepted credentials."""
        if header is None:
            return False
        if header in self._headers:
            return True

        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, _, password = decoded.partition(":")
        return (username, password) in self._pairs

    def answer(self, method: str, path: str, query: Mapping[str, str]) -> Reply:
        """Return the answer to an authorized request.

        Args:
            method: The HTTP method; only ``GET`` is served.
            path: The request path, still percent-encoded.
            query: The query parameters, last value winning.
        """
        if method != "GET":
            return twilio_error(405, METHOD_NOT_ALLOWED, f"Method {method} not allowed")

        match path.split("/"):
            case ["", "v1", "Services"]:
                return self._pager.answer(self._services, query)
            case ["", "v1", "Services", service, "Users"] if service in self._listings:
                return self._pager.answer(self._listings[service], query)
            case ["", "v1", "Services", service, "Users", user] if user:
                return self._fetch(service, unquote(user), path, None)
            case ["", "v1", "Users"]:
                return self._pager.answer(self._default, query)
            case ["", "v1", "Users", user] if user:
                return self._fetch(
                    self._default_sid, unquote(user), path, self._default.view
                )
            case ["", "v1", "Configuration"]:
                return Reply(200, self._configuration)
        return not_found(path)

    def _fetch(
        self,
        service: str,
        user: str,
        path: str,
        view: Callable[[Record], Record] | None,
    ) -> Reply:
        record = self._index(service).get(user)
        if record is None:
            return not_found(path)

        online, notifiable = presence_of(record["sid"], reachability=self._reachability)
        shown = record if view is None else view(record)
        document = {**shown, "is_online": online, "is_notifiable": notifiable}
        return Reply(200, Body(orjson.dumps(document)), compressible=True)

    def _index(self, service: str) -> Mapping[str, Record]:
        """Return the service's users by SID and by identity, built on first use."""
        index = self._indexes.get(service)
        if index is not None:
            return index
        listing = self._listings.get(service)
        if listing is None:
            return {}

        with self._index_lock:
            index = self._indexes.get(service)
            if index is None:
                index = {record["identity"]: record for record in listing.records}
                index.update((record["sid"], record) for record in listing.records)
                self._indexes[service] = index
        return index


def not_found(path: str) -> Reply:
    """Return Twilio's 404 for a path that names no resource."""
    return twilio_error(404, NOT_FOUND, f"The requested resource {path} was not found")


def _configuration(account_sid: str, default_sid: str, base_url: str) -> Record:
    """The account's Conversations configuration, as ``FetchConfiguration`` has it."""
    return {
        "account_sid": account_sid,
        "default_chat_service_sid": default_sid,
        "default_messaging_service_sid": None,
        "default_inactive_timer": None,
        "default_closed_timer": None,
        "url": f"{base_url}/v1/Configuration",
        "links": {
            "service": f"{base_url}/v1/Services/{default_sid}/Configuration",
            "webhooks": f"{base_url}/v1/Configuration/Webhooks",
        },
    }


def _default_service_view(users_url: str) -> Callable[[Record], Record]:
    """Return a view that moves a user's URLs under ``/v1/Users``."""

    def view(record: Record) -> Record:
        url = users_url + record["sid"]
        return {
            **record,
            "url": url,
            "links": {"user_conversations": f"{url}/Conversations"},
        }

    return view
