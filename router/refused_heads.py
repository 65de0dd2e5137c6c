"""What the router answers a request head it refuses before any handler runs, and how
it tells one: a head aiohttp's parser refuses (a 400 `bad_http_request`), and a head
over `server.max_header_bytes` (a 431 `request_header_too_large`, as Envoy answers).

Neither answer repeats the client's bytes. The 431 is in the endpoint's dialect, read
from the request target; a head the parser refused may have no readable target, so its
400 is always in OpenAI's shape. client_connection.py decides when a head is refused,
and lingers after it.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, InvalidURLError
from aiohttp.http_parser import RawRequestMessage

from router.errors import HeadersTooLarge
from router.wire.dialects import ANTHROPIC_MESSAGES, OPENAI_CHAT, Dialect

TARGET_PEEK = 512  # bytes of a head kept for its target, should it grow too large

# Where aiohttp's parser messages go on to quote the request's own bytes (`...
# reading: b'...'`, `Invalid HTTP header: 'X-...'`): cut there, so neither the answer
# nor the log repeats what the client sent. Its own quoted names (`Missing 'Host'
# header`) stay.
_QUOTED = re.compile(r""":\s.*$|\s*(?:bytearray\()?b['"].*$""")


def reason(error: BaseException) -> str:
    """Why the parser refused a request, without the request's bytes."""
    if isinstance(error, InvalidURLError):
        return "invalid request target"  # its message is the target itself
    if isinstance(error, BadStatusLine):
        return "invalid request line"  # its message quotes the line (the method)
    line = str(getattr(error, "message", "") or "").strip().partition("\n")[0]
    return _QUOTED.sub("", line).rstrip(":. ")[:200] or "unreadable request"


class HeadTooLarge(HttpProcessingError):
    """A request head past the limit, queued as the parser queues its errors so that
    requests before it are answered first; `target` is its request target, as far as
    it came, for the answer's dialect."""

    code = 431
    message = "Request Header Fields Too Large"

    def __init__(self, size: int, limit: int, target: bytes) -> None:
        super().__init__()
        self.size = size
        self.limit = limit
        self.target = target


def head_size(message: RawRequestMessage) -> int:
    """A parsed head's bytes, near enough: its request line and its fields."""
    fields = sum(len(name) + len(value) + 4 for name, value in message.raw_headers)
    return len(message.method) + len(message.path) + 12 + fields + 2


def target_of(start: bytes) -> bytes:
    """The request target from the first bytes of a head (`POST /v1/messages ...`)."""
    parts = start.split(b" ", 2)
    return parts[1] if len(parts) > 1 else b""


def _dialect_of(target: bytes) -> Dialect:
    path = target.partition(b"?")[0]
    anthropic = path == b"/v1/messages" or path.startswith(b"/v1/messages/")
    return ANTHROPIC_MESSAGES if anthropic else OPENAI_CHAT


def too_large(exc: HeadTooLarge) -> web.Response:
    """The 431, in the dialect of the endpoint the head was for."""
    dialect = _dialect_of(exc.target)
    error = HeadersTooLarge(
        f"request headers too large: {exc.size} bytes, over the router's "
        f"{exc.limit} (server.max_header_bytes)"
    )
    body, status = dialect.error_body(error), dialect.error_status(error)
    response = web.json_response(body, status=status, headers=error.headers())
    response.force_close()
    return response


def malformed(why: str) -> web.Response:
    """The 400 for a head the parser refused, saying `why` (from `reason()`)."""
    error = {"message": f"malformed HTTP request: {why}", "type": "invalid_request_error",
             "param": None, "code": "bad_http_request"}  # fmt: skip
    response = web.json_response({"error": error}, status=400)
    response.force_close()
    return response
