"""The OpenAPI document's links and time parameters, from the route declarations.

Links: each parameter's ``sources`` become links from the answer that carries the value to
every operation taking it; a source that names nothing real is refused when the document is
built. Times: what a time query parameter's pattern admits is at least what the server accepts (so
a value it refuses is refused) and little more; empty is the default."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from api import bounds, dr_routes, facility_routes, forecast_routes, ops, params
from api.endpoints import EVERY_ROLE, Endpoint, Param, Source
from api.errors import ApiError
from api.openapi import TIME_PATTERN, LinkError, build

pytestmark = pytest.mark.unit

CI = settings(derandomize=True, database=None, deadline=None, max_examples=400)
TIME = re.compile(TIME_PATTERN.removesuffix("$") + r"\Z")
"""As JSON Schema reads the pattern (ECMA-262: ``$`` is the end; in Python it also matches
before a final newline)."""


def document() -> dict[str, Any]:
    endpoints = [*ops.endpoints(local_issuer=True), *facility_routes.ENDPOINTS,
                 *forecast_routes.ENDPOINTS, *dr_routes.ENDPOINTS]
    return build(endpoints, title="SEMS API", version="test")


def links_of(doc: dict[str, Any]) -> set[tuple[str, str, str, tuple[tuple[str, str], ...]]]:
    """(source operation, status, target operationId, parameters) of every link."""
    out = set()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for status, answer in op["responses"].items():
                for name, link in answer.get("links", {}).items():
                    assert name == link["operationId"]
                    out.add((f"{method.upper()} {path}", status, name,
                             tuple(sorted(link["parameters"].items()))))
    return out


FIRST_FACILITY = (("path.facility_id", "$response.body#/facilities/0/facility_id"),)
FIRST_EVENT = (("path.dr_event_id", "$response.body#/events/0/id"),)


def test_links_chain_facility_ids_and_dr_event_ids() -> None:
    assert links_of(document()) == {
        # The facility list to each route of one facility (the first the caller may see).
        ("GET /api/facilities", "200", "current", FIRST_FACILITY),
        ("GET /api/facilities", "200", "rollups", FIRST_FACILITY),
        ("GET /api/facilities", "200", "facility_forecast", FIRST_FACILITY),
        ("GET /api/facilities", "200", "list_dr_events", FIRST_FACILITY),
        # A created event, a notification's first event, a facility's newest: read it.
        ("POST /api/dr-events", "201", "get_dr_event",
         (("path.dr_event_id", "$response.body#/id"),)),
        ("POST /webhooks/utility/dr-notification", "200", "get_dr_event", FIRST_EVENT),
        ("GET /api/facilities/{facility_id}/dr-events", "200", "get_dr_event", FIRST_EVENT),
    }


def test_every_link_names_an_operation_and_its_parameters() -> None:
    doc = document()
    by_id = {op["operationId"]: op for ops_ in doc["paths"].values() for op in ops_.values()}
    for _, _, target, parameters in links_of(doc):
        declared = {f"{p['in']}.{p['name']}" for p in by_id[target].get("parameters", [])}
        assert {name for name, _ in parameters} <= declared, target


class Item(BaseModel):
    item_id: str


class Listing(BaseModel):
    items: list[Item]
    note: str | None = None


async def _handler(request: web.Request) -> web.Response:
    return web.json_response({})


async def read_item(request: web.Request) -> web.Response:
    return web.json_response({})


def endpoints_with(source: Source) -> list[Endpoint]:
    item_id = Param("item_id", "path", {"type": "string"}, "an item", required=True,
                    sources=(source,))
    return [Endpoint("GET", "/items", _handler, "items", "t", roles=EVERY_ROLE,
                     response=Listing, ok_statuses=(200, 503)),
            Endpoint("POST", "/items", _handler, "add", "t", roles=EVERY_ROLE, body=Item,
                     ok_statuses=(201,)),
            Endpoint("GET", "/items/{item_id}", read_item, "an item", "t", roles=EVERY_ROLE,
                     response=Item, params=(item_id,))]


def test_a_valid_source_becomes_a_link() -> None:
    doc = build(endpoints_with(Source("GET", "/items", 200, "/items/0/item_id")), title="t",
                version="1")
    responses = doc["paths"]["/items"]["get"]["responses"]
    assert responses["200"]["links"] == {"read_item": {
        "operationId": "read_item", "description": "an item",
        "parameters": {"path.item_id": "$response.body#/items/0/item_id"}}}
    # The statuses of one operation share one response object until a link is added.
    assert "links" not in responses["503"]


@pytest.mark.parametrize(("source", "refusal"), [
    # No such operation (the path is the item's, the method is not declared there).
    (Source("DELETE", "/items/{item_id}", 200, "/item_id"), "no such operation"),
    # The operation answers 200, not 201.
    (Source("GET", "/items", 201, "/items/0/item_id"), "no body with that status"),
    # It answers 201, but without a body to take a value from.
    (Source("POST", "/items", 201, "/item_id"), "no body with that status"),
    # Not a field of Listing: a typo, a field of the wrong level, an index into an object.
    (Source("GET", "/items", 200, "/items/0/itemid"), "not a field of Listing"),
    (Source("GET", "/items", 200, "/item_id"), "not a field of Listing"),
    (Source("GET", "/items", 200, "/note/0"), "not a field of Listing"),
])
def test_a_source_naming_nothing_real_is_refused(source: Source, refusal: str) -> None:
    with pytest.raises(LinkError, match=refusal):
        build(endpoints_with(source), title="t", version="1")


def time_params(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for ops_ in doc["paths"].values() for op in ops_.values()
            for p in op.get("parameters", []) if p["schema"].get("pattern") == TIME_PATTERN]


def test_time_parameters_carry_the_range_and_may_be_empty() -> None:
    doc = document()
    assert {p["name"] for p in time_params(doc)} == {"start", "end", "start_time"}
    for p in time_params(doc):
        assert p["schema"]["format"] == "date-time"
        assert "2200-01-01T00:00:00+00:00" in p["schema"]["description"]
        assert p["allowEmptyValue"] is True  # and the server takes "" as the default:
        assert server_accepts("")
    facility = doc["paths"]["/api/facilities/{facility_id}/current"]["get"]["parameters"][0]
    assert facility == {"name": "facility_id", "in": "path", "required": True,
                        "description": "a facility the caller may see",
                        "schema": {"type": "string", "maxLength": 64,
                                   "pattern": r"^[A-Za-z0-9_.-]+$"}}  # as declared


def test_the_pattern_admits_the_local_years_of_supported_times() -> None:
    # 1970-01-01T00:00Z at -23:59 is a 1969 local time, 2199-12-31T23:59Z at +23:59 a 2200
    # one; no other year can be.
    admitted = [y for y in range(10000) if TIME.search(f"{y:04d}-06-15T12:00Z")]
    assert admitted == list(range(bounds.MIN_TIME.year - 1, bounds.MAX_TIME.year + 1))


@pytest.mark.parametrize(("raw", "admitted"), [
    ("", False),  # the parameter's default, but said by allowEmptyValue
    ("2026-01-01T00:00:00Z", True),
    ("2026-01-01T00:00Z", True),  # seconds optional
    ("2026-01-01 00:00:00.123456+05:30", True),  # a space for T; six fraction digits
    ("2026-01-01T00:00:00 05:30", True),  # a URL's '+' arrives as a space
    ("2026-01-01t00:00:00Z", False),
    ("2026-01-01T00:00:00.1234567Z", False),  # seven fraction digits
    ("2026-01-01T00:00:00", False),  # naive
    ("2026-01-01T00:00:00+0530", False),
    ("2026-01-01T24:00:00Z", False),
    ("2026-01-01T00:00:60Z", False),
    ("2026-01-01T00:00:00+24:00", False),
    ("2026-01-01T00:00:00Z\x00", False),  # nothing after the time
    ("2026-01-01T00:00:00Z\n", False),
    ("1796161149", False),
])
def test_the_pattern_by_hand(raw: str, admitted: bool) -> None:
    assert bool(TIME.search(raw)) == admitted


def server_accepts(raw: str) -> bool:
    try:
        params.check_value("start", {"type": "string", "format": "date-time"}, raw)
    except ApiError as exc:
        assert exc.status == 400
        return False
    return True


OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m)))


@st.composite
def accepted_times(draw: st.DrawFn) -> str:
    """A supported time written in any of the ways the grammar allows."""
    utc = draw(st.datetimes(min_value=bounds.MIN_TIME.replace(tzinfo=None),
                            max_value=bounds.MAX_TIME.replace(tzinfo=None) - timedelta(days=1)))
    local = utc.replace(tzinfo=UTC).astimezone(draw(OFFSETS))
    text = local.strftime("%Y-%m-%d") + draw(st.sampled_from("T ")) + local.strftime("%H:%M")
    if draw(st.booleans()) or local.second or local.microsecond:
        text += local.strftime(":%S")
        if local.microsecond or draw(st.booleans()):
            digits = draw(st.integers(min_value=1, max_value=6))
            text += "." + f"{local.microsecond:06d}"[:digits]
    offset = local.strftime("%z")
    sign = "+" if offset[0] == "+" and draw(st.booleans()) else (
        " " if offset[0] == "+" else "-")
    zulu = offset == "+0000" and draw(st.booleans())
    return text + (draw(st.sampled_from("Zz")) if zulu else f"{sign}{offset[1:3]}:{offset[3:]}")


@CI
@given(accepted_times())
def test_every_time_the_server_accepts_the_pattern_admits(raw: str) -> None:
    assert server_accepts(raw), raw
    assert TIME.search(raw), raw


@CI
@given(st.text(alphabet="0123456789-:T Zz+.", min_size=1, max_size=40))
def test_near_miss_text_the_server_accepts_the_pattern_admits(raw: str) -> None:
    if server_accepts(raw):
        assert TIME.search(raw), raw


@CI
@given(st.from_regex(TIME))
def test_what_the_pattern_admits_and_the_server_refuses_is_only_calendar_or_range(
        raw: str) -> None:
    """The spec says a little more than the server takes: impossible days (31 April, 29
    February of a common year) and local times whose offset puts them out of the range."""
    if server_accepts(raw):
        return
    year, month, day = int(raw[0:4]), int(raw[5:7]), int(raw[8:10])
    impossible_day = day > calendar.monthrange(year, month)[1]
    at_an_edge = year in (bounds.MIN_TIME.year - 1, bounds.MIN_TIME.year,
                          bounds.MAX_TIME.year - 1, bounds.MAX_TIME.year)
    assert impossible_day or at_an_edge, raw


def test_supported_range_edges() -> None:
    # The last supported instant, written at the largest offset, is a 2200 local time.
    last = (bounds.MAX_TIME - timedelta(minutes=1)).astimezone(
        timezone(timedelta(hours=23, minutes=59)))
    raw = last.strftime("%Y-%m-%dT%H:%M") + "+23:59"
    assert raw.startswith("2200-") and server_accepts(raw) and TIME.search(raw)
    first = datetime(1970, 1, 1, tzinfo=UTC).astimezone(timezone(-timedelta(hours=23,
                                                                             minutes=59)))
    raw = first.strftime("%Y-%m-%dT%H:%M") + "-23:59"
    assert raw.startswith("1969-") and server_accepts(raw) and TIME.search(raw)
