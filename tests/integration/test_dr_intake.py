"""DR intake: the signed webhook (signature, tolerance, enrolment, replays, bodies) and the
utility API (key scope, baseline in the answer, bodies, reads scoped by facility); times in
UTC, and one event at a time per facility."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from api import apikeys
from api.principal import Role
from api.signatures import sign
from connectors.sqlite import SqliteStore
from schemas.access import Utility
from schemas.dr import DrEvent, DrStatus, webhook_event_uuid
from tests.auth_helpers import bearer
from tests.integration.test_api_auth import A, B, app_for
from tests.integration.test_api_auth import store as store

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
PATH = "/webhooks/utility/dr-notification"
HOUR = timedelta(hours=1)
# A day ahead: clear of the store fixture's event (plant-a, now to now + 1 h) however long the
# run takes.
START = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
PACIFIC = timezone(timedelta(hours=-8))


def zulu(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def notification(**changes: Any) -> bytes:
    body: dict[str, Any] = {"event_id": "GRID-1", "facility_ids": [A],
                            "event_start": START.isoformat(),
                            "event_end": (START + timedelta(hours=1)).isoformat(),
                            "target_reduction_percentage": 20}
    body.update(changes)
    return orjson.dumps(body)


def event_request(**changes: Any) -> bytes:
    body: dict[str, Any] = {"facility_id": A, "target_reduction_kw": 25,
                            "event_start": START.isoformat(),
                            "event_end": (START + HOUR).isoformat()}
    body.update(changes)
    return orjson.dumps(body)


def naive(ts: datetime) -> str:
    return ts.replace(tzinfo=None).isoformat()


async def assert_error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error_code", "message", "details"}
    assert body["error_code"] == code, body
    return body


def signed(body: bytes, *, secret: str = "whsec", age_s: float = 0, utility: str = "gridco",
           signature: str | None = None) -> dict[str, str]:
    stamp = int(datetime.now(UTC).timestamp() - age_s)
    return {"Content-Type": "application/json", "X-SEMS-Utility": utility,
            "X-SEMS-Timestamp": str(stamp),
            "X-SEMS-Signature": signature or sign(secret, stamp, body)}


@pytest.fixture
async def client(store: SqliteStore) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app_for(store))) as c:
        yield c


@pytest.fixture
async def api_key(store: SqliteStore) -> dict[str, str]:
    issued = apikeys.issue("gridco", now=datetime.now(UTC))
    await store.add_api_key(issued.record)
    return {"X-API-Key": issued.key}


async def test_a_signed_notification_is_stored_once(client: Client,
                                                    store: SqliteStore) -> None:
    body = notification()
    first = await client.post(PATH, data=body, headers=signed(body))
    assert first.status == 200, await first.text()
    [event] = (await first.json())["events"]
    assert event["replayed"] is False and event["status"] == "scheduled"
    again = await client.post(PATH, data=body, headers=signed(body))  # the utility's retry
    assert (await again.json())["events"] == [{**event, "replayed": True}]
    stored = await store.dr_events(facility_id=A)
    assert [e.event_id for e in stored].count("GRID-1") == 1
    created = next(e for e in stored if e.event_id == "GRID-1")
    assert created.target_reduction_percentage == 20 and created.trace_id  # the request's
    assert first.headers["X-Trace-Id"] == created.trace_id


@pytest.mark.parametrize(("case", "headers"), [
    ("another secret", lambda b: signed(b, secret="not-it")),
    ("too old", lambda b: signed(b, age_s=301)),
    ("from the future", lambda b: signed(b, age_s=-301)),
    ("unknown utility", lambda b: signed(b, utility="nobody")),
    ("no signature", lambda b: {"Content-Type": "application/json",
                                "X-SEMS-Utility": "gridco"}),
    ("another body", lambda b: signed(notification(target_reduction_percentage=90))),
])
async def test_bad_signatures_are_refused(client: Client, case: str, headers: Any) -> None:
    body = notification()
    resp = await client.post(PATH, data=body, headers=headers(body))
    assert resp.status == 401, case
    assert (await resp.json())["error_code"] == "invalid_signature"


async def test_only_enrolled_facilities(client: Client) -> None:
    body = notification(facility_ids=[A, B])  # gridco has only plant-a
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 403
    assert (await resp.json())["details"] == {"facility_ids": [B]}


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (notification(event_start="2026-01-01T10:00:30Z"), "application/json", 400, "invalid_body"),
    (notification(extra="field"), "application/json", 400, "invalid_body"),
    (notification(event_start="2026-01-01T10:00:00Z", event_end="2026-01-01T11:00:00Z"),
     "application/json", 400, "invalid_body"),  # over already
    (notification(target_reduction_percentage=0), "application/json", 400, "invalid_body"),
    (notification(event_start=naive(START)), "application/json", 400,
     "invalid_body"),  # no offset: whose 10:00?
    (b"{not json", "application/json", 400, "invalid_body"),
    (notification(), "text/plain", 415, "unsupported_media_type"),
    (b" " * 70_000, "application/json", 413, "payload_too_large"),
])
async def test_bodies(client: Client, body: bytes, content_type: str, status: int,
                      code: str) -> None:
    headers = {**signed(body), "Content-Type": content_type}
    await assert_error(await client.post(PATH, data=body, headers=headers), status, code)


async def test_a_replay_after_the_event_is_still_a_replay(client: Client,
                                                          store: SqliteStore) -> None:
    # GRID-0 was received two days ago and is over; the utility's retry arrives now, signed
    # anew: it answers as any replay, not "over already".
    start = START - timedelta(days=3)
    received = DrEvent(id=webhook_event_uuid("gridco", "GRID-0", A), event_id="GRID-0",
                       utility_id="gridco", facility_id=A, source="webhook", event_start=start,
                       event_end=start + HOUR, target_reduction_percentage=20,
                       status="completed", created_at=start - HOUR, updated_at=start + HOUR)
    await store.insert_dr_event(received)
    window = {"event_start": start.isoformat(), "event_end": (start + HOUR).isoformat()}
    body = notification(event_id="GRID-0", **window)
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": True, "event_id": "GRID-0", "events": [
        {"id": received.id, "facility_id": A, "status": "completed", "replayed": True}]}
    body = notification(event_id="GRID-8", **window)  # a new event for that window
    await assert_error(await client.post(PATH, data=body, headers=signed(body)), 400,
                       "invalid_body")


async def test_times_are_kept_and_answered_in_utc(client: Client, store: SqliteStore,
                                                  api_key: dict[str, str]) -> None:
    # START in Pacific time, -08:00: the same instants, stored and answered with offset 0.
    body = notification(event_start=START.astimezone(PACIFIC).isoformat(),
                        event_end=(START + HOUR).astimezone(PACIFIC).isoformat())
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    [created] = (await resp.json())["events"]
    stored = await store.dr_event(created["id"])
    assert stored is not None and stored.event_start == START
    assert stored.event_start.utcoffset() == stored.event_end.utcoffset() == timedelta(0)
    detail = await client.get(f"/api/dr-events/{created['id']}", headers=bearer(Role.ADMIN, [A]))
    answered = await detail.json()
    assert (answered["event_start"], answered["event_end"]) == (zulu(START), zulu(START + HOUR))
    # The API route likewise, from +05:30, after the webhook's event (one at a time).
    ist = timezone(timedelta(hours=5, minutes=30))
    resp = await client.post("/api/dr-events", headers=api_key, json={
        "facility_id": A, "target_reduction_kw": 25,
        "event_start": (START + HOUR).astimezone(ist).isoformat(),
        "event_end": (START + 2 * HOUR).astimezone(ist).isoformat()})
    assert resp.status == 201, await resp.text()
    answered = await resp.json()
    assert (answered["event_start"], answered["event_end"]) == (zulu(START + HOUR),
                                                                zulu(START + 2 * HOUR))


@pytest.mark.parametrize(("status", "offset_min", "expected"), [
    ("scheduled", 30, 409),  # 10:30-11:30 against 10:00-11:00: half an hour in common
    ("active", -59, 409),  # 09:01-10:01: its last minute is the other's first
    ("completed", 0, 409),  # the same window twice
    ("failed", 0, 201),  # a failed event sheds nothing any more: the window is free again
    ("scheduled", 60, 201),  # 11:00-12:00: back to back, [start, end) windows do not meet
    ("scheduled", -60, 201),  # 09:00-10:00: ends as the other starts
])
async def test_one_event_at_a_time_per_facility(client: Client, store: SqliteStore,
                                                api_key: dict[str, str], status: DrStatus,
                                                offset_min: int, expected: int) -> None:
    now = datetime.now(UTC)
    existing = DrEvent(id=webhook_event_uuid("gridco", "GRID-1", A), event_id="GRID-1",
                       utility_id="gridco", facility_id=A, source="webhook", event_start=START,
                       event_end=START + HOUR, status=status, created_at=now, updated_at=now)
    await store.insert_dr_event(existing)
    start = START + timedelta(minutes=offset_min)
    body = event_request(event_start=start.isoformat(), event_end=(start + HOUR).isoformat())
    resp = await client.post("/api/dr-events", data=body,
                             headers={**api_key, "Content-Type": "application/json"})
    if expected == 201:
        assert resp.status == 201, await resp.text()
        return
    refused = await assert_error(resp, 409, "event_overlaps")
    assert refused["details"] == {"conflicts": [{
        "facility_id": A, "dr_event_id": existing.id, "event_id": "GRID-1", "status": status,
        "event_start": zulu(START), "event_end": zulu(START + HOUR)}]}
    assert [e.id for e in await store.dr_events(facility_id=A)
            if e.event_start > now + HOUR] == [existing.id]  # nothing new stored


async def test_a_notification_overlapping_at_one_facility_is_refused_whole(
        client: Client, store: SqliteStore) -> None:
    await store.upsert_utility(Utility(utility_id="gridco", name="GridCo", facility_ids=(A, B),
                                       webhook_secret=SecretStr("whsec")))
    first = notification(event_id="GRID-1", facility_ids=[A])  # 10:00-11:00 at plant-a
    assert (await client.post(PATH, data=first, headers=signed(first))).status == 200
    # GRID-2 at 10:30-11:30 for both: plant-a would take two events at once.
    later = START + timedelta(minutes=30)
    second = notification(event_id="GRID-2", facility_ids=[A, B], event_start=later.isoformat(),
                          event_end=(later + HOUR).isoformat())
    refused = await assert_error(await client.post(PATH, data=second, headers=signed(second)),
                                 409, "event_overlaps")
    assert refused["details"] == {"conflicts": [{
        "facility_id": A, "dr_event_id": webhook_event_uuid("gridco", "GRID-1", A),
        "event_id": "GRID-1", "status": "scheduled", "event_start": zulu(START),
        "event_end": zulu(START + HOUR)}]}
    assert await store.dr_events(facility_id=B) == []  # nothing made for plant-b either
    # GRID-1's retry is still a replay; GRID-2 corrected to 11:00-12:00 is accepted whole.
    again = await client.post(PATH, data=first, headers=signed(first))
    assert again.status == 200 and (await again.json())["events"][0]["replayed"] is True
    corrected = notification(event_id="GRID-2", facility_ids=[A, B],
                             event_start=(START + HOUR).isoformat(),
                             event_end=(START + 2 * HOUR).isoformat())
    resp = await client.post(PATH, data=corrected, headers=signed(corrected))
    assert resp.status == 200, await resp.text()
    assert [e["replayed"] for e in (await resp.json())["events"]] == [False, False]


async def test_events_by_api_key_answer_their_baseline(client: Client,
                                                       api_key: dict[str, str]) -> None:
    key = api_key
    window = {"event_start": START.isoformat(), "event_end": (START + HOUR).isoformat()}
    resp = await client.post("/api/dr-events", headers=key,
                             json={"facility_id": A, "target_reduction_kw": 25, **window})
    assert resp.status == 201, await resp.text()
    created = DrEvent.model_validate(await resp.json())
    assert created.utility_id == "gridco" and created.source == "api"
    assert created.baseline is not None and created.baseline["baseline_kw"] == [100.0]
    resp = await client.post("/api/dr-events", headers=key,
                             json={"facility_id": B, "target_reduction_kw": 25, **window})
    assert resp.status == 403  # not enrolled with gridco

    detail = await client.get(f"/api/dr-events/{created.id}", headers=key)
    assert (await detail.json())["commands"] == []
    outsider = await client.get(f"/api/dr-events/{created.id}", headers=bearer(Role.VIEWER, [B]))
    assert outsider.status == 403
    assert (await outsider.json())["error_code"] == "facility_forbidden"
    missing = await client.get("/api/dr-events/nope", headers=key)
    assert missing.status == 404
    listed = await client.get(f"/api/facilities/{A}/dr-events", headers=key)
    assert created.id in [e["id"] for e in (await listed.json())["events"]]


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (event_request(), "text/plain", 415, "unsupported_media_type"),
    (b" " * 70_000, "application/json", 413, "payload_too_large"),  # over 64 KiB
    (b"{not json", "application/json", 400, "invalid_body"),
    (event_request(event_end=naive(START + HOUR)), "application/json", 400,
     "invalid_body"),  # no offset
    (event_request(target_reduction_kw=0), "application/json", 400, "invalid_body"),
])
async def test_api_bodies(client: Client, api_key: dict[str, str], body: bytes,
                          content_type: str, status: int, code: str) -> None:
    resp = await client.post("/api/dr-events", data=body,
                             headers={**api_key, "Content-Type": content_type})
    await assert_error(resp, status, code)


# -- bounds on the times a utility gives (issue 13, finding 1) ---------------------------------

LEAD = timedelta(days=7)  # DrApi.max_lead_s by default (SEMS_DR_MAX_LEAD_S)


def _window(start: datetime, minutes: int = 60) -> dict[str, str]:
    return {"event_start": start.isoformat(),
            "event_end": (start + timedelta(minutes=minutes)).isoformat()}


def _lead_edge() -> datetime:
    """The last whole minute at most ``LEAD`` ahead of now (the server's clock is later)."""
    return (datetime.now(UTC) + LEAD).replace(second=0, microsecond=0)


FAR = [
    # the notification of the issue: accepted, then every DR pass failed on overflow
    ("year 9999", {"event_start": "9999-12-31T23:00:00+00:00",
                   "event_end": "9999-12-31T23:59:00+00:00"}, "event_start"),
    ("past the supported range", {"event_start": "2200-01-01T00:00:00Z",
                                  "event_end": "2200-01-01T01:00:00Z"}, "event_start"),
    ("ten minutes past the lead", None, "event_start"),
    # the clock tolerance is 300 s: an event that started ten minutes ago cannot be planned
    ("started ten minutes ago", {}, "event_start"),
    ("year 1", {"event_start": "0001-01-01T00:07:00+05:00",
                "event_end": "0001-01-01T01:07:00+05:00"}, "event_start"),
]


def _times(times: dict[str, str] | None) -> dict[str, str]:
    """``None``: ten minutes past the lead; ``{}``: started ten minutes ago."""
    if times is None:
        return _window(_lead_edge() + timedelta(minutes=10))
    if not times:
        return _window(datetime.now(UTC).replace(second=0, microsecond=0)
                       - timedelta(minutes=10))
    return times


@pytest.mark.parametrize(("case", "times", "field"), FAR, ids=[c[0] for c in FAR])
async def test_a_notification_out_of_bounds_is_refused(client: Client, store: SqliteStore,
                                                       case: str, times: dict[str, str] | None,
                                                       field: str) -> None:
    body = notification(event_id="FAR-1", **_times(times))
    refused = await assert_error(await client.post(PATH, data=body, headers=signed(body)),
                                 400, "invalid_body")
    assert [field] in [d["loc"] for d in refused["details"]], case
    assert [e.event_id for e in await store.dr_events()] == ["E-0"]  # nothing stored


@pytest.mark.parametrize(("case", "times", "field"), FAR, ids=[c[0] for c in FAR])
async def test_an_api_event_out_of_bounds_is_refused(client: Client, store: SqliteStore,
                                                     api_key: dict[str, str], case: str,
                                                     times: dict[str, str] | None,
                                                     field: str) -> None:
    resp = await client.post("/api/dr-events", data=event_request(**_times(times)),
                             headers={**api_key, "Content-Type": "application/json"})
    refused = await assert_error(resp, 400, "invalid_body")  # year 9999 was a 500
    assert [field] in [d["loc"] for d in refused["details"]], case
    assert [e.event_id for e in await store.dr_events()] == ["E-0"]


async def test_an_event_that_started_within_the_clock_tolerance_is_accepted(
        client: Client, store: SqliteStore) -> None:
    """A notification sent as the event starts, with the utility's clock a little ahead."""
    for e in await store.dr_events():  # the fixture's event, from now: out of the way
        await store.update_dr_event(e.model_copy(update={"status": "failed"}))
    minute = datetime.now(UTC).replace(second=0, microsecond=0)  # 1-2 min ago, in whole minutes
    body = notification(event_id="NOW-1", **_window(minute - timedelta(minutes=1)))
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()


async def test_events_up_to_the_lead_are_accepted(client: Client,
                                                  api_key: dict[str, str]) -> None:
    edge = _lead_edge()
    body = notification(event_id="EDGE-1", **_window(edge - HOUR))
    resp = await client.post(PATH, data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/dr-events", data=event_request(**_window(edge)),
                             headers={**api_key, "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()


# -- utility ids cannot be enumerated (issue 13, finding 6) ------------------------------------

def _comparable(resp: ClientResponse, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """The answer but its trace id (and Date, which may tick between the two requests)."""
    headers = sorted((k, v) for k, v in resp.headers.items() if k not in {"X-Trace-Id", "Date"})
    return resp.status, headers, body


@pytest.mark.parametrize(("case", "age_s"), [("fresh", 0), ("too old", 3600)])
async def test_an_unknown_utility_is_answered_as_a_wrong_signature(client: Client, case: str,
                                                                   age_s: float) -> None:
    body = notification()
    answers = []
    for headers in (signed(body, secret="not-it", age_s=age_s),  # gridco exists
                    signed(body, utility="nobody", age_s=age_s),  # no such utility
                    {k: v for k, v in signed(body, age_s=age_s).items()
                     if k != "X-SEMS-Utility"}):  # no utility header at all
        async with client.post(PATH, data=body, headers=headers) as resp:
            assert resp.status == 401
            answers.append(_comparable(resp, await resp.read()))
    assert answers[0] == answers[1] == answers[2], case
