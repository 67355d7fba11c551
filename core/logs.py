"""Logging: plain text for a terminal, or one JSON object per line for a log pipeline; every
record carries the trace id of the request (or pipeline step) it belongs to.

The trace id lives in a context variable, so it follows the ``await`` chain of a request
without being passed around: the API takes it from the caller (W3C ``traceparent``, else
``X-Request-ID``) or makes one, and answers it in ``X-Trace-Id``.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

import orjson

trace_id_var: ContextVar[str | None] = ContextVar("sems_trace_id", default=None)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


TRACE_HEADER = "sems-trace-id"
"""The Kafka record header that carries the trace id from the producing batch or request to
the agents that consume the record."""


def new_trace_id() -> str:
    return uuid.uuid4().hex


def trace_id_of_header(value: bytes | None) -> str:
    """The trace id a record carries, if well formed, else a new one."""
    if value:
        text = value.decode("ascii", "replace")
        if _REQUEST_ID.match(text):
            return text
    return new_trace_id()


def trace_id_from(traceparent: str | None, request_id: str | None) -> str:
    """The caller's trace id when it sent a valid one (W3C trace context first), else a new
    one. Anything else a caller sends is ignored, never echoed into logs."""
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1)
    if request_id and _REQUEST_ID.match(request_id):
        return request_id
    return new_trace_id()


class TraceIdFilter(logging.Filter):
    """Stamps each record with the trace id of the context it is logged in (on a handler: it
    runs synchronously in the logging call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = trace_id_var.get()
        record.trace_id = trace_id
        record.trace = trace_id or "-"  # for the text format
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "trace_id"[, "exception"]}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(trace)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
