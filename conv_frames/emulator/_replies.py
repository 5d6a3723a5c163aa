"""Answers the emulator sends: bodies, Twilio error documents, gateway pages."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import orjson

__all__ = [
    "JSON",
    "Body",
    "Reply",
    "html_gateway_page",
    "html_login_page",
    "twilio_error",
]

JSON = "application/json"
HTML = "text/html; charset=utf-8"

_ERROR_DOCS = "https://www.twilio.com/docs/errors/"


class Body:
    """Response bytes, with their gzip form made on first demand and kept.

    Cached pages hold one ``Body`` each, so a page is compressed at most once
    however many clients ask for it gzipped.
    """

    __slots__ = ("_gzipped", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._gzipped: bytes | None = None

    def gzipped(self) -> bytes:
        """Return the body compressed with gzip (deterministic: no timestamp)."""
        if self._gzipped is None:
            # Two threads may both compress the first time; either result is fine.
            self._gzipped = gzip.compress(self.raw, compresslevel=6, mtime=0)
        return self._gzipped


@dataclass(frozen=True)
class Reply:
    """A complete HTTP answer, before it is written to the socket.

    Attributes:
        status: The HTTP status code.
        body: The payload.
        content_type: The ``Content-Type`` header.
        headers: Extra headers, in order.
        compressible: Whether the body may be sent gzipped on request.
    """

    status: int
    body: Body
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = field(default=())
    compressible: bool = False


def twilio_error(
    status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    """Return an error in Twilio's JSON shape ``{code, message, more_info, status}``.

    Args:
        status: The HTTP status code.
        code: Twilio's error code, such as 20404.
        message: What went wrong, for a person.
        headers: Extra headers, such as ``Retry-After``.
    """
    document = {
        "code": code,
        "message": message,
        "more_info": f"{_ERROR_DOCS}{code}",
        "status": status,
    }
    return Reply(status, Body(orjson.dumps(document)), JSON, headers)


def html_gateway_page(status: int, reason: str) -> Reply:
    """Return the kind of HTML page a load balancer sends for a 5xx."""
    title = f"{status} {reason}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>edge-proxy</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Reply(status, Body(page.encode()), HTML)


def html_login_page() -> Reply:
    """Return a 200 HTML sign-in page, as a captive portal or a proxy might."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<title>Sign in</title></head>\n<body>\n<form method="post" '
        'action="/login">\n<label>User <input name="user"></label>\n'
        '<label>Password <input name="password" type="password"></label>\n'
        "<button>Sign in</button>\n</form>\n</body>\n</html>\n"
    )
    return Reply(200, Body(page.encode()), HTML)
