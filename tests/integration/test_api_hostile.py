"""Hostile input against the real API server (the runtimes' runner, a free port, the SQLite
store): extreme dates, floods, oversized and malformed HTTP, lax types; and generated query
strings, headers and bodies for every route, which must answer 4xx with the error body or
succeed, never 5xx (issue 13, findings 3-7, properties 3, 5-8)."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from api import ApiDeps, create_app
from api.aiohttp_protocol_errors import api_runner
from api.dr_deps import DrApi
from api.principal import Role
from api.ratelimit import RateLimiter
from api.signatures import sign
from connectors.sqlite import SqliteStore
from core.metrics import Metrics
from schemas.access import Utility
from schemas.metadata import Facility, Meter, MeterType
from tests.auth_helpers import authenticator, bearer, issuer
from tests.integration.test_api_auth import FixedBaseline

pytestmark = pytest.mark.integration

A = "fac-001"
SECRET = "whsec"
CI = settings(derandomize=True, database=None, deadline=None, max_examples=60,
              suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Server:
    port: int

    def request(self, method: str, target: str, *, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


async def _submitted(_: object) -> None:
    pass


@contextmanager
def serve(tmp_path: Path, *, client_limiter: RateLimiter | None = None,
          limiter: RateLimiter | None = None) -> Iterator[Server]:
    """The API as ``sems run`` serves it (``api_runner``), on its own loop in a thread, so
    that tests can speak plain (and broken) HTTP to it."""
    loop = asyncio.new_event_loop()
    started: list[Any] = []

    async def start() -> tuple[web.AppRunner, SqliteStore, int]:
        store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
        await store.open()
        await store.upsert_facilities([Facility(facility_id=A, name=A, contract_demand_kw=100)])
        await store.upsert_meters([Meter(meter_id=f"{A}-main", facility_id=A,
                                         meter_type=MeterType.MAIN)])
        await store.upsert_utility(Utility(utility_id="gridco", name="GridCo",
                                           facility_ids=(A,), webhook_secret=SecretStr(SECRET)))
        app = create_app(ApiDeps(
            timeseries=store, metadata=store, metrics=store.metrics,
            auth=authenticator(store), jwks=issuer().jwks(), forecasts=store,
            rate_limiter=limiter or RateLimiter(1e6, 1_000_000),
            client_rate_limiter=client_limiter or RateLimiter(1e6, 1_000_000),
            dr=DrApi(store=store, access=store, baselines=FixedBaseline(store, store),
                     submit=_submitted)))
        runner = api_runner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, store, port

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started.append(asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30))
    runner, store, port = started[0]
    try:
        yield Server(port)
    finally:
        async def stop() -> None:
            await runner.cleanup()
            await store.close()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path) as s:
        yield s


def _error(status: int, body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(body)
    assert set(doc) == {"error_code", "message", "details"}, doc
    return doc


ADMIN = bearer(Role.ADMIN)
VIEWER = bearer(Role.VIEWER, [A])


@pytest.mark.parametrize(("target", "parameter"), [
    (f"/api/facilities/{A}/rollups?window=1h&end=0001-01-01T00:00:00Z", "end"),
    (f"/api/facilities/{A}/forecast?start_time=9999-12-31T23:00:00Z", "start_time"),
    (f"/api/facilities/{A}/forecast?start_time=0001-01-01T00:07:00%2B05:00", "start_time"),
    (f"/api/facilities/{A}/rollups?start=2026-01-01T00:00:00Z%00", "start"),  # a NUL after
    (f"/api/facilities/{A}/rollups?limit=%2B7", "limit"),
    (f"/api/facilities/{A}/rollups?limit=1&limit=2", "limit"),
    (f"/api/facilities/{A}/rollups?meter_id={'m' * 65}", "meter_id"),
    (f"/api/dr-events/{'e' * 65}", "dr_event_id"),                # the spec's maxLength 64
])
def test_extreme_and_lax_parameters_are_named_400s(server: Server, target: str,
                                                   parameter: str) -> None:
    """Finding 3 (was 500) and finding 6 (was accepted)."""
    status, _, body = server.request("GET", target, headers=VIEWER)
    assert status == 400, body
    doc = _error(status, body)
    assert doc["error_code"] == "invalid_parameter"
    assert doc["details"]["parameter"] == parameter


def _window() -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    return {"event_start": start.isoformat(),
            "event_end": (start + timedelta(hours=1)).isoformat()}


def _webhook(body: bytes, *, stamp: str | None = None) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    return {"Content-Type": "application/json", "X-SEMS-Utility": "gridco",
            "X-SEMS-Timestamp": stamp if stamp is not None else str(now),
            "X-SEMS-Signature": sign(SECRET, now, body)}


@pytest.mark.parametrize("value", ["50", True])
def test_strings_and_booleans_are_not_numbers(server: Server, value: object) -> None:
    """Finding 6: both were accepted as a reduction."""
    note = orjson.dumps({"event_id": "E-1", "facility_ids": [A],
                         "target_reduction_percentage": value, **_window()})
    status, _, body = server.request("POST", "/webhooks/utility/dr-notification",
                                     headers=_webhook(note), body=note)
    assert status == 400 and _error(status, body)["error_code"] == "invalid_body"
    event = orjson.dumps({"facility_id": A, "target_reduction_kw": value, **_window()})
    status, _, body = server.request("POST", "/api/dr-events", body=event, headers={
        **ADMIN, "Content-Type": "application/json"})
    assert status == 400 and _error(status, body)["error_code"] == "invalid_body"


def test_year_9999_dr_events_are_400_not_500(server: Server) -> None:
    """Finding 3: POST /api/dr-events with year-9999 times."""
    event = orjson.dumps({"facility_id": A, "target_reduction_kw": 10,
                          "event_start": "9999-12-31T23:00:00-05:00",
                          "event_end": "9999-12-31T23:59:00-05:00"})
    status, _, body = server.request("POST", "/api/dr-events", body=event, headers={
        **ADMIN, "Content-Type": "application/json"})
    assert status == 400, body
    assert _error(status, body)["error_code"] == "invalid_body"


@pytest.mark.parametrize("stamp", ["+{now}", "{now}.0", "1_796_161_149"])
def test_the_timestamp_header_has_an_exact_grammar(server: Server, stamp: str) -> None:
    """Finding 6: accepted with a signature over int(value). (" ts " cannot be sent: HTTP
    strips a field value's outer spaces; verify() refuses it, tests/unit/test_api_parsers.)"""
    note = orjson.dumps({"event_id": "E-2", "facility_ids": [A],
                         "target_reduction_percentage": 10, **_window()})
    headers = _webhook(note, stamp=stamp.format(now=int(datetime.now(UTC).timestamp())))
    status, _, body = server.request("POST", "/webhooks/utility/dr-notification",
                                     headers=headers, body=note)
    assert status == 401, body
    assert _error(status, body)["error_code"] == "invalid_signature"


SECRETISH = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-PART"


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRETISH}{'A' * 16000}"
     "\r\n\r\n".encode(), "line_too_long"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        f"X-H{i}: {SECRETISH}\r\n".encode() for i in range(200)) + b"\r\n",
     "too_many_headers"),
    (f"GET /healthz {SECRETISH} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "bad_request_line"),
    (f"G\x00T /healthz HTTP/1.1\r\nAuthorization: {SECRETISH}\r\n\r\n".encode(), None),
])
def test_protocol_errors_are_the_api_error_body_and_echo_nothing(
        server: Server, caplog: pytest.LogCaptureFixture, request_bytes: bytes,
        reason: str | None) -> None:
    """Finding 5: aiohttp answered text/plain quoting the header, and logged it at ERROR."""
    caplog.set_level(logging.DEBUG)
    answer = server.raw(request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer[:200]
    assert b"Content-Type: application/json" in head
    assert b"Server: sems\r\n" in head and b"X-Content-Type-Options: nosniff" in head
    doc = _error(400, body)
    assert doc["error_code"] == "bad_request"
    if reason is not None:
        assert doc["details"] == {"reason": reason}
    assert b"SECRET" not in answer
    assert "SECRET" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_flood_of_garbage_tokens_or_forged_webhooks_gets_429(tmp_path: Path) -> None:
    """Finding 4: 300 of each from one address never got a 429. Default per-address
    settings (200/s, burst 400); a refused credential costs 10."""
    with serve(tmp_path, client_limiter=RateLimiter(200.0, 400)) as server:
        answers = [server.request("GET", "/api/facilities",
                                  headers={"Authorization": f"Bearer garbage{i}"})
                   for i in range(300)]
        statuses = [status for status, _, _ in answers]
        # 40 at once (400 / 10), then about 20 a second: most of a fast flood is refused
        assert statuses[0] == 401 and statuses.count(429) > 150, statuses
        status, headers, body = next(a for a in answers if a[0] == 429)
        assert int(headers["Retry-After"]) >= 1
        assert _error(status, body)["error_code"] == "rate_limited"
        assert server.request("GET", "/healthz")[0] == 200  # probes are never refused
    with serve(tmp_path / "2", client_limiter=RateLimiter(200.0, 400)) as server:
        note = b'{"event_id": "E-9"}'
        forged = {**_webhook(note), "X-SEMS-Signature": "v1=" + "0" * 64}
        statuses = [server.request("POST", "/webhooks/utility/dr-notification",
                                   headers=forged, body=note)[0] for _ in range(300)]
        assert statuses[0] == 401 and statuses.count(429) > 150, statuses


def test_tokens_with_one_subject_and_different_roles_do_not_share_a_bucket(
        tmp_path: Path) -> None:
    """Finding 4: a viewer's burst made an admin's /metrics scrape get 429 (both sub=sems-cli)."""
    (tmp_path / "p").mkdir()
    with serve(tmp_path / "p", limiter=RateLimiter(0.01, 5)) as server:
        viewer = bearer(Role.VIEWER, [A], subject="sems-cli")
        admin = bearer(Role.ADMIN, subject="sems-cli")
        assert [server.request("GET", "/api/facilities", headers=viewer)[0]
                for _ in range(6)] == [200] * 5 + [429]
        assert server.request("GET", "/metrics", headers=admin)[0] == 200


@pytest.mark.parametrize(("method", "target", "headers", "status", "no_store"), [
    ("GET", f"/api/facilities/{A}/current", VIEWER, 200, True),
    ("GET", "/api/facilities", {}, 401, True),
    ("GET", "/no/such/route", {}, 404, True),
    ("DELETE", "/api/facilities", VIEWER, 405, True),
    ("GET", "/healthz", {}, 200, True),
    ("GET", "/api/openapi.json", {}, 200, False),
])
def test_security_headers_on_every_response(server: Server, method: str, target: str,
                                            headers: dict[str, str], status: int,
                                            no_store: bool) -> None:
    """Finding 7: Server named aiohttp's version; no nosniff, no no-store."""
    got, h, body = server.request(method, target, headers=headers)
    assert got == status, body
    assert h["Server"] == "sems"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert (h.get("Cache-Control") == "no-store") is no_store


# Generated requests: every route, hostile query strings, headers and bodies.
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_times = st.one_of(st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()), _text,
                   st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00"]))
_query_value = st.one_of(_text, _times, st.integers().map(str),
                         st.sampled_from(["1m", "15m", "1h", "15min", "1hour"]))
_query = st.dictionaries(
    st.sampled_from(["window", "start", "end", "limit", "meter_id", "start_time",
                     "granularity"]), _query_value, max_size=4)
GETS = ["/api/facilities", f"/api/facilities/{A}/current", f"/api/facilities/{A}/rollups",
        f"/api/facilities/{A}/forecast", f"/api/facilities/{A}/dr-events", "/api/dead-letters",
        "/api/dr-events/{text}", "/api/facilities/{text}/rollups", "/healthz",
        "/api/openapi.json", "/.well-known/jwks.json"]


@CI
@given(st.sampled_from(GETS), _query, _text,
       st.sampled_from([ADMIN, VIEWER, {}, {"Authorization": "Bearer x"},
                        {"X-API-Key": "sems_uk_x"}]))
def test_generated_queries_never_5xx(server: Server, path: str, query: dict[str, str],
                                     text: str, headers: dict[str, str]) -> None:
    target = path.replace("{text}", quote(text, safe="") or "x")
    if query:
        target += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    status, _, body = server.request("GET", target, headers=headers)
    assert status < 500 or (path == "/healthz" and status == 503), body
    if status >= 400:
        _error(status, body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | _text
    | _times, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(_text, inner, max_size=3), max_leaves=6)


@CI
@given(st.sampled_from(["/webhooks/utility/dr-notification", "/api/dr-events"]),
       st.sampled_from(["event_id", "facility_ids", "facility_id", "event_start",
                        "event_end", "target_reduction_percentage", "target_reduction_kw",
                        "extra"]), _json,
       st.one_of(st.none(), st.integers().map(str), st.text(  # what a header can carry
           st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
           max_size=20)))
def test_generated_dr_bodies_and_headers_never_5xx(server: Server, path: str, field: str,
                                                   value: object, stamp: str | None) -> None:
    fields = {"event_id": "E-h", "facility_ids": [A], "facility_id": A,
              "target_reduction_percentage": 10, "target_reduction_kw": 10, **_window()}
    fields.pop("facility_id" if path.startswith("/webhooks") else "facility_ids")
    fields.pop("target_reduction_kw" if path.startswith("/webhooks")
               else "target_reduction_percentage")
    body = orjson.dumps({**fields, field: value})
    headers = (_webhook(body, stamp=stamp) if path.startswith("/webhooks")
               else {**ADMIN, "Content-Type": "application/json"})
    status, _, answer = server.request("POST", path, headers=headers, body=body)
    assert status < 500, answer
    if status >= 400:
        _error(status, answer)
