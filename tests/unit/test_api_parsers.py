"""The API's parsers of outside input, alone: every input is accepted or refused with a 4xx
``ApiError`` (or the parser's named error), never anything else (issue 13, properties 3, 5, 8).

Generated inputs run under a fixed, derandomised profile: the same examples on every run."""

from __future__ import annotations

import argparse
import inspect
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest
from aiohttp import web, web_protocol
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from api import bounds, params
from api.aiohttp_protocol_errors import TESTED_AIOHTTP, describe
from api.endpoints import Param
from api.errors import ApiError
from api.principal import Principal, Role
from api.ratelimit import RateLimiter
from api.signatures import SignatureError, sign, verify
from schemas.dr import DrEventRequest, DrNotification, RequestDatetime
from streams.admin_cli import ttl_s

pytestmark = pytest.mark.unit

CI = settings(derandomize=True, database=None, deadline=None, max_examples=300)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# Text that looks like times: real ones, and their hostile neighbours.
_time_like = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.text(alphabet="0123456789-:T+Z .\x00zé٣", max_size=40),
    st.text(max_size=60),
    st.builds(lambda t, tail: t.isoformat() + tail,
              st.datetimes(timezones=st.just(UTC)), st.text(min_size=1, max_size=5)),
)


def _refused_by_name(exc: ApiError, name: str) -> None:
    assert exc.status == 400
    assert exc.error_code == "invalid_parameter"
    assert isinstance(exc.details, dict) and exc.details["parameter"] == name


@CI
@given(_time_like)
def test_a_time_parameter_is_a_time_in_range_or_a_named_400(raw: str) -> None:
    try:
        ts = bounds.parse_time("start", raw)
    except ApiError as exc:
        _refused_by_name(exc, "start")
        return
    assert ts.tzinfo is not None
    assert bounds.MIN_TIME <= ts < bounds.MAX_TIME
    assert ts - timedelta(days=7) < ts + timedelta(days=7)  # what handlers do: no overflow


@pytest.mark.parametrize("raw", [
    "0001-01-01T00:00:00Z",         # finding 3: rollups end
    "9999-12-31T23:00:00Z",         # finding 3: forecast start_time
    "0001-01-01T00:07:00+05:00",    # finding 3: no UTC time at all
    "9999-12-31T23:59:59-05:00",    # past datetime.max once in UTC
    "1969-12-31T23:59:59Z",         # just before MIN_TIME
    "2200-01-01T00:00:00Z",         # MAX_TIME is exclusive
    "2026-01-01T00:00:00Z\x00",     # finding 6: a NUL after a valid time
    "2026-01-01T00:00:00Z2026-01-01T00:00:00Z",  # anything after it
    "2026-01-01T00:00:00",          # naive
    "2026-W01-1T00:00:00Z",         # a week date: fromisoformat takes it, we do not
    "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",  # fullwidth digits
])
def test_time_parameters_refused(raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        bounds.parse_time("end", raw)
    _refused_by_name(caught.value, "end")


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
    ("2026-01-01T01:00:00 01:00", datetime(2026, 1, 1, tzinfo=UTC)),  # '+' sent unescaped
    ("1970-01-01T00:00:00+00:00", bounds.MIN_TIME),                     # the lower bound
    ("2199-12-31T23:59:59.999999Z", bounds.MAX_TIME - timedelta(microseconds=1)),
])
def test_time_parameters_accepted(raw: str, expected: datetime) -> None:
    assert bounds.parse_time("end", raw) == expected


INT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 10_000}
ID_SCHEMA = {"type": "string", "maxLength": 64, "pattern": r"^[A-Za-z0-9_.-]+$"}
ENUM_SCHEMA = {"type": "string", "enum": ["1m", "15m", "1h"]}


@CI
@given(st.sampled_from([INT_SCHEMA, ID_SCHEMA, ENUM_SCHEMA,
                        {"type": "string", "format": "date-time"}]),
       st.one_of(st.text(max_size=80), st.integers().map(str), _time_like))
def test_a_declared_parameter_conforms_or_is_a_named_400(schema: dict[str, object],
                                                           raw: str) -> None:
    try:
        params.check_value("p", schema, raw)
    except ApiError as exc:
        _refused_by_name(exc, "p")
        return
    if schema is INT_SCHEMA:
        assert 1 <= int(raw) <= 10_000 and raw.lstrip("-").isascii()
    if schema is ID_SCHEMA:
        assert len(raw) <= 64 and "\n" not in raw
    if schema is ENUM_SCHEMA:
        assert raw in ("1m", "15m", "1h")


@pytest.mark.parametrize(("schema", "raw"), [
    (INT_SCHEMA, " 7"), (INT_SCHEMA, "+7"), (INT_SCHEMA, "7_0"),  # int() takes all three
    (INT_SCHEMA, "٣"), (INT_SCHEMA, "0"), (INT_SCHEMA, "10001"), (INT_SCHEMA, "9" * 40),
    (ID_SCHEMA, "a" * 65),      # maxLength (dr_event_id's finding: 64)
    (ID_SCHEMA, "fac-001\n"),   # a final '$' must not let a newline through
    (ENUM_SCHEMA, "5m"),
])
def test_declared_bounds_are_enforced(schema: dict[str, object], raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        params.check_value("p", schema, raw)
    _refused_by_name(caught.value, "p")


def test_a_param_the_checker_cannot_enforce_is_refused_at_start_up() -> None:
    with pytest.raises(TypeError):
        params.check_declared([Param("x", "query", {"type": "string", "multipleOf": 2}, "")])


SECRET = "whsec"
BODY = b'{"event_id":"E1"}'


@CI
@given(st.one_of(st.none(), st.text(max_size=20), st.integers().map(str)),
       st.one_of(st.none(), st.text(max_size=200),
                 st.just(sign(SECRET, int(NOW.timestamp()), BODY))))
def test_verify_accepts_or_raises_signature_error(timestamp: str | None,
                                                  signature: str | None) -> None:
    try:
        verify(SECRET, timestamp=timestamp, signature=signature, body=BODY, now=NOW)
    except SignatureError:
        return
    assert timestamp == str(int(NOW.timestamp()))


@pytest.mark.parametrize("timestamp", [
    f"+{int(NOW.timestamp())}", f" {int(NOW.timestamp())} ", "1_796_161_149",
    "١٧٩٦١٦١١٤٩", "1" * 13,
])
def test_timestamp_header_has_an_exact_grammar(timestamp: str) -> None:
    """Each is a valid signature over its own int() value: only the grammar refuses it."""
    stamp = int(NOW.timestamp())
    with pytest.raises(SignatureError, match="unix seconds"):
        verify(SECRET, timestamp=timestamp, signature=sign(SECRET, stamp, BODY), body=BODY,
               now=NOW)


def test_a_non_ascii_signature_is_refused_not_a_crash() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, timestamp=str(int(NOW.timestamp())), signature="v1=é" * 10, body=BODY,
               now=NOW)


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3), max_leaves=8)
_WINDOW = {"event_start": "2026-12-02T10:00:00Z", "event_end": "2026-12-02T11:00:00Z"}
_NOTE = {"event_id": "E-1", "facility_ids": ["fac-001"], "target_reduction_percentage": 10,
         **_WINDOW}
_REQUEST = {"facility_id": "fac-001", "target_reduction_kw": 10, **_WINDOW}


@CI
@given(st.sampled_from([(DrNotification, _NOTE), (DrEventRequest, _REQUEST)]),
       st.sampled_from([*_NOTE, *_REQUEST, "extra"]),
       st.one_of(_json_value, _time_like))
def test_dr_bodies_validate_or_raise_validation_error(
        model_and_body: tuple[type[DrNotification] | type[DrEventRequest], dict[str, object]],
        field: str, value: object) -> None:
    model, body = model_and_body
    try:  # orjson writes NaN and infinities as null
        parsed = model.model_validate_json(orjson.dumps({**body, field: value}))
    except ValidationError:
        return
    assert bounds.MIN_TIME <= parsed.event_start < parsed.event_end < bounds.MAX_TIME


@pytest.mark.parametrize(("model", "body", "field", "value"), [
    (DrNotification, _NOTE, "target_reduction_percentage", "50"),   # finding 6
    (DrNotification, _NOTE, "target_reduction_percentage", True),
    (DrEventRequest, _REQUEST, "target_reduction_kw", "50"),
    (DrEventRequest, _REQUEST, "target_reduction_kw", True),
    (DrEventRequest, _REQUEST, "event_start", 1796161149),           # a number is no time
    (DrNotification, _NOTE, "event_start", "2026-12-02T10:00:00Z\u0000"),
    # what pydantic alone takes but the query grammar does not: one grammar for every time
    (DrNotification, _NOTE, "event_start", "2026-12-02T10:00:00+0000"),
    (DrEventRequest, _REQUEST, "event_start", " 2026-12-02T10:00:00Z"),
    (DrEventRequest, _REQUEST, "event_end", "20261202T110000Z"),
    (DrNotification, _NOTE, "event_end", "2026-12-02T11:00:00.0000000Z"),
    (DrNotification, _NOTE, "event_end", "9999-12-31T23:59:00-05:00"),  # no UTC: was 500
    (DrEventRequest, _REQUEST, "event_start", "0001-01-01T00:07:00+05:00"),
    (DrNotification, _NOTE, "event_start", "2200-01-01T00:00:00Z"),
    (DrNotification, _NOTE, "facility_ids", "fac-001"),              # not a list
])
def test_dr_bodies_are_strict(model: type[DrNotification] | type[DrEventRequest],
                              body: dict[str, object], field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(orjson.dumps({**body, field: value}))


_in_range_times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30),
                               timezones=st.timezones()).map(lambda t: t.isoformat())


@CI
@given(st.one_of(_time_like, _in_range_times))
def test_a_body_time_is_read_by_the_query_grammar(raw: str) -> None:
    """A body takes exactly the times a query parameter takes, as the same instant (the
    body's time type alone: the window rules refuse most of them for other reasons). Only
    the query's reading of a space before the offset as a '+' typed into a URL differs."""
    if len(raw) > 6 and raw[-6] == " " and raw[-3] == ":":
        return
    try:
        query: datetime | None = bounds.parse_time("event_start", raw)
    except ApiError:
        query = None
    try:
        body: datetime | None = _BODY_TIME.validate_json(orjson.dumps(raw))
    except ValidationError:
        body = None
    assert body == query


_BODY_TIME: TypeAdapter[datetime] = TypeAdapter(RequestDatetime)


def test_dr_bodies_take_json_integers_as_numbers() -> None:
    assert DrNotification.model_validate_json(orjson.dumps(_NOTE)).target_reduction_percentage \
        == 10.0


def _token(role: Role, facilities: frozenset[str] | None, subject: str = "sems-cli",
           issuer: str = "sems-local") -> Principal:
    return Principal(subject=subject, role=role, facility_ids=facilities, via="token",
                     issuer=issuer)


def test_rate_keys_tell_tokens_with_the_default_subject_apart() -> None:
    """Finding 4: every ``sems token create`` says sub=sems-cli."""
    viewer = _token(Role.VIEWER, frozenset({"fac-001"}))
    keys = {viewer.rate_key, _token(Role.ADMIN, None).rate_key,
            _token(Role.VIEWER, frozenset({"fac-002"})).rate_key,
            _token(Role.VIEWER, frozenset({"fac-001"}), issuer="other-idp").rate_key}
    assert len(keys) == 4
    assert _token(Role.VIEWER, frozenset({"fac-001"})).rate_key == viewer.rate_key  # stable
    key = Principal(subject="gridco/k1", role=Role.UTILITY, facility_ids=frozenset(),
                    via="api_key", utility_id="gridco", key_id="k1")
    assert key.rate_key == "api_key:k1"


def test_a_charge_empties_a_bucket_but_never_below_empty() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=20)
    limiter.charge("addr", 0.0, 100.0)
    assert limiter.take("addr", 0.0) == pytest.approx(0.1)  # empty: one token in 0.1 s
    assert limiter.take("addr", 0.1) == 0.0                 # not in debt


@pytest.mark.parametrize("raw", ["-3600", "0", "nan", "inf", "1e9", "soon"])
def test_token_ttl_is_positive_and_bounded(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        ttl_s(raw)


def test_token_ttl_accepts_a_day() -> None:
    assert ttl_s("86400") == 86400.0


def test_canary_what_the_protocol_error_patch_touches_in_aiohttp() -> None:
    """Fails the day an aiohttp upgrade moves what ``api/aiohttp_protocol_errors.py``
    overrides: re-read that module against the new aiohttp, then add the version."""
    assert aiohttp.__version__ in TESTED_AIOHTTP
    assert list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters) == [
        "self", "request", "status", "exc", "message"]
    assert "_make_server" in vars(web.AppRunner)
    assert "__call__" in vars(web.Server)
    source = inspect.getsource(web.Server.__call__)
    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in source
    assert describe(None, 500)[0] == "internal_error"
