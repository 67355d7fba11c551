"""Every declared parameter constraint enforced, from the same ``Param`` objects that write the
OpenAPI document: a ``maxLength``, ``pattern``, ``enum``, ``minimum`` or ``maximum`` in the spec
is one the server refuses (400 ``invalid_parameter`` naming the parameter) before a handler
runs, so the spec cannot promise a bound the code forgot.

Handlers still parse their own values (``parse_int``, ``parse_time``); this is the generic
floor under them. Only the JSON Schema keywords the endpoints use are understood; an unknown
one in a ``Param`` is a programming error, refused when the app is built (``check_declared``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from multidict import MultiMapping

from api import bounds
from api.endpoints import Param
from api.errors import bad_parameter

INTEGER = re.compile(r"-?[0-9]{1,18}")
"""A query integer: ASCII digits, an optional minus, nothing else (``int()`` would also take
spaces, ``+``, ``_`` and other scripts' digits)."""

KNOWN_KEYWORDS = frozenset({"type", "enum", "pattern", "maxLength", "minLength", "minimum",
                            "maximum", "format", "default"})


def check_declared(params: Iterable[Param]) -> None:
    """Refuse, at start-up, a ``Param`` whose schema this module would not enforce."""
    for p in params:
        unknown = set(p.schema) - KNOWN_KEYWORDS
        if unknown or p.schema.get("type") not in ("string", "integer"):
            raise TypeError(f"parameter {p.name}: schema {p.schema} is not enforceable "
                            f"(unknown: {sorted(unknown)})")


def check(params: Sequence[Param], query: MultiMapping[str], path: Mapping[str, str]) -> None:
    """400 for the first parameter that breaks its declaration (or is repeated in the query:
    which of two values a handler would take is not something to leave to chance)."""
    for p in params:
        if p.where == "query":
            values = query.getall(p.name, [])
            if len(values) > 1:
                raise bad_parameter(p.name, f"{p.name} is given {len(values)} times; give it "
                                    "once")
            raw = values[0] if values else None
        else:
            raw = path.get(p.name)
        if raw is None:
            if p.required:
                raise bad_parameter(p.name, f"{p.name} is required")
            continue
        check_value(p.name, p.schema, raw)


def check_value(name: str, schema: Mapping[str, Any], raw: str) -> None:
    """``raw`` against one parameter's schema; ``ApiError`` 400 when it does not conform."""
    echo = raw[:bounds.MAX_ECHO_CHARS]
    if schema.get("type") == "integer":
        if INTEGER.fullmatch(raw) is None:
            raise bad_parameter(name, f"{name} must be an integer", value=echo)
        value = int(raw)
        _range(name, schema, value)
        return
    if "enum" in schema and raw not in schema["enum"]:
        raise bad_parameter(name, f"{name} must be one of {', '.join(schema['enum'])}",
                            value=echo)
    if "maxLength" in schema and len(raw) > schema["maxLength"]:
        raise bad_parameter(name, f"{name} is at most {schema['maxLength']} characters",
                            max_length=schema["maxLength"])
    if "minLength" in schema and len(raw) < schema["minLength"]:
        raise bad_parameter(name, f"{name} is at least {schema['minLength']} characters",
                            min_length=schema["minLength"])
    if "pattern" in schema and _pattern(schema["pattern"]).search(raw) is None:
        raise bad_parameter(name, f"{name} must match {schema['pattern']}", value=echo)
    if schema.get("format") == "date-time" and raw != "":
        bounds.parse_time(name, raw)


def _range(name: str, schema: Mapping[str, Any], value: int) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad_parameter(name, f"{name} must be between {low} and {high}", value=value)


@functools.lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern, with a final ``$`` meaning the end of the string (in Python it
    also matches before a trailing newline: "fac-001\\n" would pass ``^[a-z0-9-]+$``)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)

