"""Works around aiohttp answering its own protocol errors in text/plain, echoing the request.

When aiohttp's HTTP parser refuses a request (a 16,000-byte header, too many headers, a bad
request line), the app and its middleware never see it: ``RequestHandler.handle_error``
answers ``400 Bad Request`` in text/plain with the parser's message, which quotes the first
~100 bytes of the offending line (an ``Authorization`` header, a token), and logs it at ERROR
with that message, on ``aiohttp.server``. aiohttp has no public hook for this answer, so this
module overrides ``handle_error`` in a subclass of ``RequestHandler`` and makes the runner's
``Server`` build that subclass. What it touches of aiohttp:

- ``web_protocol.RequestHandler.handle_error(request, status, exc, message)``;
- ``web.Server.__call__`` (the protocol factory), reproduced with ``_loop`` and ``_kwargs``;
- ``web.AppRunner._make_server``, whose ``Server`` gets the subclass.

It is used only with a tested aiohttp (``TESTED_AIOHTTP``); with another one ``api_runner``
logs a warning and returns aiohttp's own runner, unpatched: the answers get uglier, nothing
breaks. The canary ``test_canary_what_the_protocol_error_patch_touches_in_aiohttp`` in
``tests/unit/test_api_parsers.py`` fails the day an upgrade moves any of this.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import aiohttp
import orjson
from aiohttp import http_exceptions, web, web_protocol

from api.app import SECURITY_HEADERS

log = logging.getLogger(__name__)

TESTED_AIOHTTP = frozenset({"3.14.5"})

_REASONS: tuple[tuple[type[BaseException], str, str], ...] = (
    # Most specific first: BadHttpMethod is a BadStatusLine.
    (http_exceptions.LineTooLong, "line_too_long",
     "a request line or header is too long"),
    (http_exceptions.BadHttpMethod, "bad_method", "the request method is not valid"),
    (http_exceptions.BadStatusLine, "bad_request_line", "the request line is not valid"),
    (http_exceptions.InvalidHeader, "bad_header", "a header is not valid"),
    (http_exceptions.InvalidURLError, "bad_url", "the request target is not valid"),
    (http_exceptions.PayloadEncodingError, "bad_body_encoding",
     "the body's encoding is not valid"),
    (http_exceptions.BadHttpMessage, "bad_request", "the request is not valid HTTP"),
)


_TOO_MANY = frozenset({"Too many headers received", "Too many trailers received"})
"""aiohttp's fixed texts for these (a plain ``BadHttpMessage``): safe to compare with."""


def describe(exc: BaseException | None, status: int) -> tuple[str, str, str]:
    """``(error_code, reason, message)`` for a refused request, from the exception's class
    only: its text may quote the request, so it is neither answered nor logged."""
    if status >= 500:
        return "internal_error", "internal_error", "internal error"
    if isinstance(exc, http_exceptions.HttpProcessingError) and exc.message in _TOO_MANY:
        return "bad_request", "too_many_headers", "the request has too many headers"
    for cls, reason, message in _REASONS:
        if isinstance(exc, cls):
            return "bad_request", reason, message
    return "bad_request", "bad_request", "the request is not valid HTTP"


def error_body(status: int, exc: BaseException | None) -> web.Response:
    error_code, reason, message = describe(exc, status)
    body = {"error_code": error_code, "message": message, "details": {"reason": reason}}
    resp = web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    resp.force_close()
    return resp


class JsonErrorRequestHandler(web_protocol.RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's own errors as the API's error body; one log line naming the class of
        the error and the peer, never the parser's message (it quotes the request)."""
        _, reason, _ = describe(exc, status)
        if status >= 500:
            log.error("aiohttp refused a request from %s: %s (%s)", request.remote,
                      type(exc).__name__ if exc else "error", status)
        else:
            log.info("refused a malformed request from %s: %s (%s, %d)", request.remote,
                     reason, type(exc).__name__ if exc else "error", status)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response "
                                  "with the error message")
        return error_body(status if status in HTTPStatus._value2member_map_ else 400, exc)


class _JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _JsonErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same class layout, one method more
        return server


def patch_supported(version: str = aiohttp.__version__) -> bool:
    return version in TESTED_AIOHTTP


def api_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The ``AppRunner`` the runtimes serve the API with: aiohttp's own, with its protocol
    errors answered as ``{error_code, message, details}`` (keyword arguments as
    ``web.AppRunner``'s)."""
    if not patch_supported():
        log.warning("aiohttp %s is not one api/aiohttp_protocol_errors.py was tested with "
                    "(%s): its protocol errors are answered as aiohttp does", aiohttp.__version__,
                    ", ".join(sorted(TESTED_AIOHTTP)))
        return web.AppRunner(app, **kwargs)
    return _JsonErrorAppRunner(app, **kwargs)
