"""The soak's DR side (``bench/soak.py``): a short schedule of real events (a few minutes each,
one facility at a time, by signed webhook or API key) with replays, overlaps and a burst of
concurrent duplicates; a watch on the simulated BMS for loads shed outside any event's window
plus its release deadline; and the wait, at the end, for every due event to be final."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.soak_load import Traffic, _iso, _minute, created_by, replayed
from bench.soak_system import shed_loads
from simulators.building import BuildingModel

FINAL = frozenset({"completed", "failed"})
LEAD_S = 120.0
"""Events start this far ahead: the plan and its BMS commands are ready by the start."""


class DrSchedule:
    def __init__(self, traffic: Traffic, *, release_s: float) -> None:
        self.traffic = traffic
        self.release_s = release_s
        self.next_free = {fid: datetime.now(UTC) for fid in traffic.facility_ids}
        self.created = 0
        self.findings: dict[str, str] = {}
        self._burst_done = False

    def _note(self, key: str, example: str) -> None:
        self.findings.setdefault(key, example[:600])

    async def run(self, stop: asyncio.Event, *, until_s: float) -> None:
        started = time.monotonic()
        turn = 0
        while not stop.is_set() and time.monotonic() - started < until_s:
            rng = self.traffic.rng
            fid = self.traffic.facility_ids[turn % len(self.traffic.facility_ids)]
            turn += 1
            now = datetime.now(UTC)
            start = max(_minute(now) + timedelta(seconds=LEAD_S),
                        _minute(self.next_free[fid]) + timedelta(minutes=1))
            end = start + timedelta(minutes=rng.choice([2, 3]))
            if start - now <= timedelta(minutes=4):
                if not self._burst_done and time.monotonic() - started > until_s * 0.15:
                    self._burst_done = True
                    made = await self.traffic.concurrent_duplicates(fid, start, end)
                    self.created += made
                    if made == 0:
                        self._note("concurrent burst created nothing", f"{fid} {_iso(start)}")
                else:
                    await self._one(fid, start, end, webhook=turn % 2 == 0)
                self.next_free[fid] = end + timedelta(seconds=self.release_s + 60)
            try:
                await asyncio.wait_for(stop.wait(), 10)
            except TimeoutError:
                pass

    async def _one(self, fid: str, start: datetime, end: datetime, *, webhook: bool) -> None:
        t = self.traffic
        if webhook:
            doc = t.notification(fid, start, end)
            status, body = await t.webhook(doc, "webhook valid")
        else:
            payload = orjson.dumps({"facility_id": fid, "event_start": _iso(start),
                                    "event_end": _iso(end), "target_reduction_kw": 3})
            status, body = await t.request(
                "dr-events POST valid", "POST", "/api/dr-events", body=payload,
                headers={"X-API-Key": t.creds.api_key, "Content-Type": "application/json"})
        if not 200 <= status < 300:
            self._note(f"valid event refused ({status})", f"{fid} {_iso(start)}: {body[:300]!r}")
            return
        self.created += created_by(body)
        with contextlib.suppress(Exception):
            reply = orjson.loads(body)
            if isinstance(reply, dict) and isinstance(reply.get("id"), str):
                t.event_ids.append(reply["id"])
        if webhook and t.rng.random() < 0.5:  # a replay creates nothing new
            status, body = await t.webhook(doc, "webhook replay")
            if status != 200 or not replayed(body):
                self._note("replay not answered as a replay", f"{status} {body[:300]!r}")
        if t.rng.random() < 0.5:  # an overlapping window must be refused
            shifted = t.notification(fid, start + timedelta(minutes=1),
                                     end + timedelta(minutes=1))
            status, body = await t.webhook(shifted, "webhook overlapping")
            if 200 <= status < 300:
                self._note("overlapping event accepted", f"{fid} {body[:300]!r}")


class ShedWatch:
    """Every 3 s: each facility's shed loads in the simulated BMS, against the events SEMS
    lists; a load shed outside [start - lead, end + deadline_s] of every event is a violation."""

    def __init__(self, traffic: Traffic, models: dict[str, BuildingModel], *,
                 deadline_s: float) -> None:
        self.traffic = traffic
        self.models = models
        self.deadline = timedelta(seconds=deadline_s)
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.violations: list[str] = []
        self._seen: set[tuple[str, str]] = set()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.check()
            try:
                await asyncio.wait_for(self._stop.wait(), 3)
            except TimeoutError:
                pass

    async def check(self) -> None:
        self.events.update(await list_events(self.traffic, self.events))
        now = datetime.now(UTC)
        for fid, loads in shed_loads(self.models).items():
            if any(_window(e, self.deadline)[0] <= now <= _window(e, self.deadline)[1]
                   for e in self.events.get(fid, [])):
                continue
            for load in loads:
                key = (fid, load.split("=")[0])
                if key not in self._seen:
                    self._seen.add(key)
                    self.violations.append(f"{fid} {load} still shed at {now:%H:%M:%S}Z")

    async def settle(self, *, timeout_s: float) -> None:
        """After the events are final: wait until no load is shed, or until every event's
        window has closed (``timeout_s``, the deadline), then look once more, so that a load
        left shed at the end is a violation and not a load the watch stopped looking at."""
        for _ in range(int(timeout_s // 3) + 1):
            if not shed_loads(self.models):
                break
            await asyncio.sleep(3)
        await self.check()


def shifted(iso: str, delta: timedelta) -> datetime:
    """``iso + delta``, clamped to what ``datetime`` can hold (SEMS may have stored an event in
    year 9999 or 1: the soak must not die of what it is looking for)."""
    t = datetime.fromisoformat(iso)
    try:
        return t + delta
    except OverflowError:
        return (datetime.max if delta > timedelta(0) else datetime.min).replace(tzinfo=UTC)


def _window(event: dict[str, Any], deadline: timedelta) -> tuple[datetime, datetime]:
    return (shifted(event["event_start"], -timedelta(seconds=LEAD_S)),
            shifted(event["event_end"], deadline))


async def list_events(traffic: Traffic, previous: dict[str, list[dict[str, Any]]]
                      ) -> dict[str, list[dict[str, Any]]]:
    """Every facility's events as an admin sees them (the previous list where a call fails,
    e.g. while SEMS restarts)."""
    out = dict(previous)
    headers = {"Authorization": f"Bearer {traffic.creds.admin}"}
    for fid in traffic.facility_ids:
        status, body = await traffic.request("dr-events list (soak's own)", "GET",
                                             f"/api/facilities/{fid}/dr-events",
                                             headers=headers)
        if status == 200:
            out[fid] = orjson.loads(body)["events"]
    return out


async def wait_final(traffic: Traffic, *, deadline_s: float) -> list[dict[str, Any]]:
    """Wait until every event due within minutes is final, or until the latest such event's
    end + ``deadline_s`` has passed; returns every event SEMS lists."""
    events: dict[str, list[dict[str, Any]]] = {}
    while True:
        events = await list_events(traffic, events)
        now = datetime.now(UTC)
        flat = [e for es in events.values() for e in es]
        # The soak's own schedule; not what a lax parser let through for next week.
        due = [e for e in flat
               if datetime.fromisoformat(e["event_start"]) <= now + timedelta(minutes=10)]
        open_ = [e for e in due if e["status"] not in FINAL]
        last = max((shifted(e["event_end"], timedelta(seconds=deadline_s)) for e in open_),
                   default=now)
        if not open_ or now > last:
            return flat
        await asyncio.sleep(3)
