"""DR intake: the signed webhook (signature, tolerance, enrolment, replays, bodies) and the
utility API (key scope, baseline in the answer, reads scoped by facility)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import apikeys
from api.principal import Role
from api.signatures import sign
from connectors.sqlite import SqliteStore
from schemas.dr import DrEvent
from tests.auth_helpers import bearer
from tests.integration.test_api_auth import A, B, app_for
from tests.integration.test_api_auth import store as store

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
PATH = "/webhooks/utility/dr-notification"
START = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


def notification(**changes: Any) -> bytes:
    body: dict[str, Any] = {"event_id": "GRID-1", "facility_ids": [A],
                            "event_start": START.isoformat(),
                            "event_end": (START + timedelta(hours=1)).isoformat(),
                            "target_reduction_percentage": 20}
    body.update(changes)
    return orjson.dumps(body)


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
    (b"{not json", "application/json", 400, "invalid_body"),
    (notification(), "text/plain", 415, "unsupported_media_type"),
    (b" " * 70_000, "application/json", 413, "payload_too_large"),
])
async def test_bodies(client: Client, body: bytes, content_type: str, status: int,
                      code: str) -> None:
    headers = {**signed(body), "Content-Type": content_type}
    resp = await client.post(PATH, data=body, headers=headers)
    assert resp.status == status, await resp.text()
    assert (await resp.json())["error_code"] == code


async def test_events_by_api_key_answer_their_baseline(client: Client,
                                                       store: SqliteStore) -> None:
    issued = apikeys.issue("gridco", now=datetime.now(UTC))
    await store.add_api_key(issued.record)
    key = {"X-API-Key": issued.key}
    window = {"event_start": START.isoformat(),
              "event_end": (START + timedelta(hours=1)).isoformat()}
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
