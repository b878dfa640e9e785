"""What ``worker serve`` checks before a request reaches the API: the Host it was sent to, the
size of its body, and the token.

- **Host.** A browser sends a page's requests to whatever address its name resolves to now: a
  site whose name is made to resolve to 127.0.0.1 (DNS rebinding) reaches a loopback server as
  its own origin, so ``Origin == Host`` proves nothing. Only names of ours are served: the
  loopback names, the address listened on, and those given with ``--allowed-host``; any other
  Host is 421 before anything else is looked at.
- **Body.** A body is counted as it comes, never read whole first (FastAPI's ``max_body_size``,
  Starlette's ``RequestBodyLimitMiddleware``): one declared longer than its route's cap is
  refused before a byte of it is read, one that grows past it is refused there. Uploads may be
  as large as the upload limit and a form's own bytes (``upload_body_cap``); every other body is
  a small JSON document (``JSON_MAX_BYTES``).
- **Token.** Compared as bytes in constant time, so a guess in any alphabet is a plain 401; a
  token itself must be something a URL, a header and a cookie all carry unchanged.
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.errors import ConfigError

TOKEN_COOKIE = "worker_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Addresses that mean "every interface": no client sends them as its Host.
EVERY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
# A review is the largest JSON body: a file path as long as the kernel takes (4096 bytes), each
# character escaped at most 6 bytes long, and a few short fields.
JSON_MAX_BYTES = 32 * 1024
# What a multipart form adds to the files it carries: boundaries and each part's headers.
FORM_OVERHEAD = 64 * 1024
# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; then maybe a port.
HOST_HEADER = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")
# RFC 6265's cookie-octet: printable ASCII but space, '"', ',', ';' and '\'.
TOKEN = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")


def served_names(host: str, allowed: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """The Host names served: loopback's, the address listened on (unless it is every address)
    and ``allowed``."""
    given = set() if host in EVERY_ADDRESS else {host}
    return frozenset(_name(n) for n in (*LOOPBACK_NAMES, *given, *allowed))


def _name(host: str) -> str:
    return host.strip().strip("[]").lower()


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """True if a Host header (``name[:port]``) names one of ``names``, exactly."""
    found = HOST_HEADER.fullmatch(header or "")
    return found is not None and _name(found.group(1)) in names


def check_token(token: str) -> None:
    """Raise ConfigError unless ``token`` travels unchanged in a URL, a header and a cookie."""
    if not TOKEN.fullmatch(token):
        raise ConfigError("--token must be printable ASCII without spaces, quotes, commas, semicolons "
                          "or backslashes (make one with: openssl rand -hex 32)")


# Who reviews: a short printable name (a person's, or a team's), written into each decision.
REVIEWER = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


def check_reviewer(name: str) -> None:
    """Raise ConfigError unless ``name`` is 1-100 characters with no control character."""
    if not REVIEWER.fullmatch(name) or name != name.strip():
        raise ConfigError("--reviewer must be 1 to 100 characters, without control characters or blanks "
                          "at either end")


def carries(given: str | None, token: str) -> bool:
    """Whether ``given`` (from a query, a cookie or a header, in any alphabet) is the token."""
    return bool(given) and secrets.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


def upload_body_cap(max_bytes: int) -> int:
    """The body an upload may have: the file and what a multipart form adds to it."""
    return max_bytes + FORM_OVERHEAD


class HostGate:
    """ASGI middleware, outermost: a request naming a Host not of ours is answered 421, and
    nothing else is looked at."""

    def __init__(self, app: ASGIApp, *, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not host_allowed(Headers(scope=scope).get("host"), self.names):
            refusal = JSONResponse({"detail": "this server does not answer to that Host: open it by a name "
                                    "it was given (--allowed-host)"}, 421)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def token_given(request: Request) -> str | None:
    """The token a request carries: in the query (opening the page), the cookie it set, or a
    bearer header."""
    return (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
            or request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None)


# ``token=<anything>`` in a logged request line: the page is opened as /?token=SECRET.
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class HideTokens(logging.Filter):
    """For the access log: the request line's query keeps its ``token=`` but not its value,
    so the journal (readable by its admins' group) never holds the page's secret, nor the
    guesses people tried."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(TOKEN_IN_QUERY.sub(r"\1...", arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        return True
