"""The one error body of the API: ``{error_code, message, details}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str,
                 details: dict[str, Any] | list[Any] | None = None, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details if details is not None else {}
        self.headers = headers or {}


def error_response(status: int, error_code: str, message: str,
                   details: dict[str, Any] | list[Any] | None = None) -> web.Response:
    body = {"error_code": error_code, "message": message,
            "details": details if details is not None else {}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"no {what} {ident!r}", {what + "_id": ident})


def bad_parameter(name: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_parameter", message, {"parameter": name, **details})
