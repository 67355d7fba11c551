"""The soak's hostile traffic (``bench/soak.py``): API queries with random parameters over every
GET route of the live OpenAPI document, valid and invalid DR webhooks and ``POST
/api/dr-events``, and garbage over MQTT. Every answer is counted by status; the first example
of each 5xx (per route) is kept, so a report names what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from api.signatures import sign
from connectors.mqtt import MqttPublisher
from simulators.fleet import Fleet
from simulators.publish import payload_of, topic_of

HOSTILE_TIMES = ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:07:00+05:00",
                 "9999-12-31T23:00:00-05:00", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00",
                 "2026-01-01T00:00:00Z\x00junk", "now", "", "1e308", "-1",
                 "2026-01-01T00:00:00+24:00", "x" * 5000)
RESTART_SLACK_S = 2.0
DEGRADED_ON_PURPOSE = "health degraded (503) while restarted on purpose"
"""``/healthz``'s 503 naming only the checks of a dependency the soak restarted: counted
apart, not among the 5xx (``Tally.server_errors`` counts statuses starting with 5)."""
OUTAGE_SLACK_S = 10.0
"""SEMS reconnects within a second of a dependency coming back; /healthz may say degraded
until then (and the soak's outage end is taken after the server is up)."""
"""A connection error this long after SEMS is healthy again still counts as the restart's."""
HOSTILE_STRINGS = ("", " ", "\x00", "' OR 1=1 --", "../../etc/passwd", "%00", "é" * 300,
                   "x" * 10_000, "fac-001\x00", "${jndi:ldap://x}", "-1", "1e999")


@dataclass
class Tally:
    """Answers by (kind, status), and the first example of each failure kind."""

    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_5xx: dict[str, str] = field(default_factory=dict)
    findings: dict[str, str] = field(default_factory=dict)
    """Other contract breaks (not 5xx) by kind: the first example of each."""
    last_conn_error: str = ""
    restarts: list[list[float]] = field(default_factory=list)
    """[began, ended] (monotonic) of each SEMS restart: a connection error then is expected;
    one outside is a finding (SEMS stalled or dropped connections)."""

    outages: list[tuple[frozenset[str], list[float]]] = field(default_factory=list)
    """(health checks, began, ended) of each dependency the soak restarts on purpose (the
    broker: ``mqtt``; PostgreSQL: ``store``): ``/healthz`` answering 503 ``degraded`` for
    those checks then is the documented answer, not a server error."""

    def outage_began(self, checks: frozenset[str]) -> None:
        self.outages.append((checks, [time.monotonic(), float("inf")]))

    def outage_ended(self) -> None:
        self.outages[-1][1][1] = time.monotonic() + OUTAGE_SLACK_S

    def expected_degraded(self, failing: frozenset[str], *times: float) -> bool:
        return bool(failing) and any(failing <= checks and a <= t <= b
                                     for checks, (a, b) in self.outages for t in times)

    def restart_began(self) -> None:
        self.restarts.append([time.monotonic(), float("inf")])

    def restart_ended(self) -> None:
        self.restarts[-1][1] = time.monotonic() + RESTART_SLACK_S

    def restarting(self, *times: float) -> bool:
        return any(a <= t <= b for a, b in self.restarts for t in times)

    def count(self, kind: str, status: int | str) -> None:
        self.statuses[(kind, str(status))] += 1

    def note(self, key: str, example: str) -> None:
        self.findings.setdefault(key, example[:600])

    @property
    def server_errors(self) -> int:
        return sum(n for (_, s), n in self.statuses.items() if s.startswith("5"))


@dataclass
class Credentials:
    admin: str
    viewer: str
    """A viewer token of the first facility only."""
    api_key: str
    utility_id: str
    secret: str


class Traffic:
    """One HTTP session shared by every generator; ``rng`` seeded so a run can be repeated."""

    def __init__(self, base: str, creds: Credentials, fleet: Fleet, tally: Tally, *,
                 seed: int) -> None:
        self.base = base
        self.creds = creds
        self.fleet = fleet
        self.tally = tally
        self.rng = random.Random(seed)
        self.facility_ids = [f.facility_id for f in fleet.facilities]
        self.meter_ids = [m.meter_id for m in fleet.meters]
        self.event_ids: list[str] = []
        self.get_routes: list[dict[str, Any]] = []
        self.session: aiohttp.ClientSession | None = None
        self._seq = 0

    async def __aenter__(self) -> Traffic:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def request(self, kind: str, method: str, path: str, *,
                      headers: dict[str, str] | None = None, body: bytes | None = None,
                      params: Sequence[tuple[str, str]] = ()) -> tuple[int, bytes]:
        """Send and count; 0 is a connection error (SEMS restarting), also counted."""
        if self.session is None:
            raise RuntimeError("traffic session not open")
        sent = time.monotonic()
        try:
            async with self.session.request(method, self.base + path, headers=headers,
                                            data=body, params=list(params)) as resp:
                data = await resp.read()
                status = resp.status
        except ValueError as exc:  # the client itself refused to send it (header injection)
            self.tally.count(kind, "not_sent")
            self.tally.note(f"{kind}: not sent", f"{method} {path}: {exc!r}")
            return 0, b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = f"{method} {path}: {exc!r}"
            if self.tally.restarting(sent, time.monotonic()):
                self.tally.count(kind, "conn_error (SEMS restarting)")
            else:
                label = "timeout" if isinstance(exc, TimeoutError) else "conn_error"
                self.tally.count(kind, label)
                self.tally.note(f"{kind}: {label} outside the SEMS restart", what)
            self.tally.last_conn_error = what
            return 0, b""
        if path == "/healthz" and status == 503 and self.tally.expected_degraded(
                _failing_checks(data), sent, time.monotonic()):
            # The documented answer while a dependency is down, not a server error.
            self.tally.count(kind, DEGRADED_ON_PURPOSE)
            return status, data
        self.tally.count(kind, status)
        self._check(kind, method, path, params, body, status, data,
                    resp.headers.get("Content-Type", ""))
        return status, data

    def _check(self, kind: str, method: str, path: str, params: Sequence[tuple[str, str]],
               body: bytes | None, status: int, data: bytes, content_type: str) -> None:
        where = f"{method} {path}?{_qs(params)} body={(body or b'')[:300]!r}"
        template = _template(path)
        if status >= 500:
            self.tally.first_5xx.setdefault(f"{method} {template} {status}",
                                            f"{where} -> {data[:300]!r}")
        hostile = any(w in kind for w in ("hostile", "bad", "stale", "unknown"))
        if hostile and 200 <= status < 300:
            self.tally.note(f"{kind}: accepted ({status})", f"{where} -> {data[:200]!r}")
        if status >= 400 and status != 429 and path != "/healthz":  # health: its own body
            try:
                doc = orjson.loads(data)
                ok = isinstance(doc, dict) and {"error_code", "message", "details"} <= set(doc)
            except orjson.JSONDecodeError:
                ok = False
            if not ok:
                self.tally.note(f"{status} without the error body ({content_type})",
                                f"{where} -> {data[:200]!r}")

    # -- GET routes ----------------------------------------------------------------------

    async def load_spec(self) -> None:
        status, data = await self.request("spec", "GET", "/api/openapi.json")
        if status != 200:
            raise RuntimeError(f"GET /api/openapi.json answered {status}")
        spec = orjson.loads(data)
        for path, ops in spec["paths"].items():
            if "get" in ops:
                self.get_routes.append({"path": path, "params": ops["get"].get("parameters",
                                                                                  [])})

    def _value(self, param: dict[str, Any], hostile: bool) -> str:
        schema = param.get("schema", {})
        name = param["name"]
        rng = self.rng
        if hostile:
            pool = HOSTILE_TIMES if schema.get("format") == "date-time" else HOSTILE_STRINGS
            extra: list[str] = ["0", "-5", "99999999999999999999", "1.5", "true"] \
                if schema.get("type") == "integer" else []
            return str(rng.choice([*pool, *extra]))
        if name == "facility_id":
            return rng.choice(self.facility_ids)
        if name == "dr_event_id":
            return rng.choice(self.event_ids) if self.event_ids else "missing"
        if name == "meter_id":
            return rng.choice(self.meter_ids)
        if "enum" in schema:
            return str(rng.choice(schema["enum"]))
        if schema.get("format") == "date-time":
            t = datetime.now(UTC) - timedelta(seconds=rng.uniform(-86_400, 6 * 3600))
            return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        if schema.get("type") == "integer":
            return str(rng.randint(int(schema.get("minimum", 1)),
                                   int(schema.get("maximum", 1000))))
        return str(rng.choice(self.facility_ids))

    def _credential(self) -> tuple[str, dict[str, str]]:
        c = self.creds
        who = self.rng.choice(["admin", "admin", "viewer", "utility", "garbage", "none"])
        return who, {
            "admin": {"Authorization": f"Bearer {c.admin}"},
            "viewer": {"Authorization": f"Bearer {c.viewer}"},
            "utility": {"X-API-Key": c.api_key},
            "garbage": {"Authorization": "Bearer " + self.rng.choice(
                ["x", "a.b.c", c.admin[:-4] + "AAAA", "é" * 40])},
            "none": {},
        }[who]

    async def query(self) -> None:
        """One GET on a random route, parameters valid or hostile, as a random caller."""
        route = self.rng.choice(self.get_routes)
        hostile = self.rng.random() < 0.4
        path = route["path"]
        params: list[tuple[str, str]] = []
        for p in route["params"]:
            bad = hostile and self.rng.random() < 0.5
            if p["in"] == "path":
                path = path.replace("{" + p["name"] + "}",
                                    _quote(self._value(p, bad)))
            elif p.get("required") or self.rng.random() < 0.6:
                params.append((p["name"], self._value(p, bad)))
        if path == "/metrics" or path.startswith("/api/openapi"):
            who, headers = "admin", {"Authorization": f"Bearer {self.creds.admin}"}
        else:
            who, headers = self._credential()
        await self.request(f"GET as {who}", "GET", path, headers=headers, params=params)

    # -- DR: webhooks and POST /api/dr-events ----------------------------------------------

    def signed(self, body: bytes, *, ts: int | None = None, secret: str | None = None,
               utility: str | None = None) -> dict[str, str]:
        stamp = int(time.time()) if ts is None else ts
        return {"Content-Type": "application/json",
                "X-SEMS-Utility": utility or self.creds.utility_id,
                "X-SEMS-Timestamp": str(stamp),
                "X-SEMS-Signature": sign(secret or self.creds.secret, stamp, body)}

    def notification(self, facility_id: str, start: datetime, end: datetime,
                     **extra: Any) -> dict[str, Any]:
        return {"event_id": f"SOAK-{self._next()}-{self.rng.randrange(10**6)}",
                "facility_ids": [facility_id], "event_start": _iso(start),
                "event_end": _iso(end), "target_reduction_percentage": 15, **extra}

    async def webhook(self, doc: dict[str, Any] | bytes, kind: str = "webhook valid",
                      **sig: Any) -> tuple[int, bytes]:
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        return await self.request(kind, "POST", "/webhooks/utility/dr-notification",
                                  headers=self.signed(body, **sig), body=body)

    async def hostile_webhook(self) -> None:
        """One invalid webhook: a forged or stale signature, an unknown utility, or a
        correctly signed hostile body. None of these may create an event or a 5xx."""
        rng = self.rng
        fid = rng.choice(self.facility_ids)
        # Six days ahead (inside the 7-day lead bound): what a lax parser lets through never
        # overlaps the soak's own schedule.
        soon = _minute(datetime.now(UTC)) + timedelta(days=6, minutes=rng.randrange(1440))
        good = self.notification(fid, soon, soon + timedelta(minutes=5))
        choice = rng.randrange(12)
        if choice == 0:
            await self.webhook(good, "webhook bad signature", secret="not-the-secret")
        elif choice == 1:
            await self.webhook(good, "webhook stale", ts=int(time.time()) - 3600)
        elif choice == 2:
            await self.webhook(good, "webhook unknown utility", utility="no-such-utility")
        elif choice == 3:
            body = orjson.dumps(good)
            headers = self.signed(body)
            headers["X-SEMS-Timestamp"] = rng.choice(["+" + headers["X-SEMS-Timestamp"],
                                                     " 1_796_161_149 ", "1e9", "-1", "\t1"])
            await self.request("webhook bad timestamp", "POST",
                               "/webhooks/utility/dr-notification", headers=headers, body=body)
        else:
            doc = {**good, **self._hostile_fields(choice, soon)}
            await self.webhook(doc, "webhook hostile body")

    def _hostile_fields(self, choice: int, soon: datetime) -> dict[str, Any]:
        rng = self.rng
        far = _minute(datetime.now(UTC)) + timedelta(days=rng.choice([8, 60, 3000]))
        fields: list[dict[str, Any]] = [
            {"event_start": "9999-12-31T23:00:00+00:00", "event_end": "9999-12-31T23:59:00+00:00"},
            {"event_start": "0001-01-01T00:00:00+00:00", "event_end": "0001-01-01T01:00:00+00:00"},
            {"target_reduction_percentage": rng.choice(["50", True, None, 1e308, -1, 0, 101])},
            {"event_id": "x" * rng.choice([129, 10_000]), "extra_field": "y" * 50_000},
            {"facility_ids": rng.choice([[], ["fac-999"], ["fac-001"] * 3, "fac-001",
                                         ["x" * 1000]])},
            {"event_start": "2026-01-01T00:00:00\x00junk"},
            {"event_end": _iso(soon + timedelta(hours=rng.choice([25, 24 * 400])))},
            {"event_start": _iso(far), "event_end": _iso(far + timedelta(minutes=5))},
        ]
        return fields[choice - 4]

    async def hostile_dr_post(self) -> None:
        """``POST /api/dr-events`` with hostile bodies, as the utility or an admin."""
        rng = self.rng
        fid = rng.choice(self.facility_ids)
        soon = _minute(datetime.now(UTC)) + timedelta(days=6, minutes=rng.randrange(1440))
        doc: dict[str, Any] = {"facility_id": fid, "event_start": _iso(soon),
                               "event_end": _iso(soon + timedelta(minutes=3)),
                               "target_reduction_kw": 5}
        doc.update(rng.choice([
            {"event_start": "9999-12-31T23:00:00Z", "event_end": "9999-12-31T23:59:00Z"},
            {"event_start": "0001-01-01T00:00:00Z", "event_end": "0001-01-01T00:30:00Z"},
            {"target_reduction_kw": rng.choice(["5", True, 1e308, -3, None])},
            {"facility_id": rng.choice(["fac-999", "", "x" * 5000, None])},
            {"event_end": doc["event_start"]},
            {"surprise": 1},
        ]))
        headers = rng.choice([{"X-API-Key": self.creds.api_key},
                              {"Authorization": f"Bearer {self.creds.admin}"},
                              {"Authorization": f"Bearer {self.creds.viewer}"}])
        await self.request("dr-events POST hostile", "POST", "/api/dr-events",
                           headers={**headers, "Content-Type": "application/json"},
                           body=orjson.dumps(doc))
        if rng.random() < 0.2:  # not JSON at all, or huge
            await self.request("dr-events POST hostile", "POST", "/api/dr-events",
                               headers={**headers, "Content-Type": "application/json"},
                               body=rng.choice([b"{", b"\xff" * 100, b"[" * 5000,
                                                b'{"a":"' + b"x" * 3_000_000 + b'"}']))

    async def concurrent_duplicates(self, facility_id: str, start: datetime, end: datetime,
                                    n: int = 10) -> int:
        """``n`` simultaneous webhooks for one facility and window, different event ids, and
        ``n`` identical API posts: at most one may be created (the rest 409). Returns the
        number created (2xx, not replayed)."""
        docs = [self.notification(facility_id, start, end) for _ in range(n)]
        hooks = await asyncio.gather(*(self.webhook(d, "webhook concurrent") for d in docs))
        body = orjson.dumps({"facility_id": facility_id, "event_start": _iso(start),
                             "event_end": _iso(end), "target_reduction_kw": 5})
        headers = {"X-API-Key": self.creds.api_key, "Content-Type": "application/json"}
        posts = await asyncio.gather(*(self.request(
            "dr-events POST concurrent", "POST", "/api/dr-events", headers=headers, body=body)
            for _ in range(n)))
        created = sum(created_by(d) for s, d in [*hooks, *posts] if 200 <= s < 300)
        if created > 1:
            self.tally.note("concurrent creations of one window",
                            f"{created} events created for {facility_id} "
                            f"{_iso(start)}..{_iso(end)} by {n} webhooks + {n} posts at once")
        return created


def created_by(body: bytes) -> int:
    """Events a 2xx answer created: a webhook's ``events`` not ``replayed``, or the event a
    ``POST /api/dr-events`` answers."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        return sum(1 for e in doc["events"] if isinstance(e, dict) and not e.get("replayed"))
    return 1 if isinstance(doc, dict) and "id" in doc else 0


def replayed(body: bytes) -> bool:
    """A webhook answer in which every event is a replay (nothing new created)."""
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body)
        events = doc.get("events") if isinstance(doc, dict) else None
        if isinstance(events, list) and events:
            return all(isinstance(e, dict) and e.get("replayed") for e in events)
        return bool(isinstance(doc, dict) and doc.get("replayed"))
    return False


# -- MQTT garbage ---------------------------------------------------------------------------

def garbage_messages(fleet: Fleet, rng: random.Random, now: datetime) -> list[tuple[str, bytes]]:
    """Raw hostile payloads beside the simulator's own malformed ones: noise, huge and deep
    documents, extreme values and times, off-topic and unknown meters, and late readings
    (off the 15 s grid, so they never collide with a reading the log expects)."""
    r = rng.choice(fleet.readings_at(now))
    good = orjson.loads(payload_of(r))
    topic = topic_of(r)
    late = r.model_copy(update={"timestamp": now - timedelta(minutes=rng.randint(2, 50),
                                                              seconds=-rng.randint(1, 14))})
    return [
        (topic, rng.randbytes(rng.randint(0, 2000))),
        (topic, b"[" * 10_000 + b"]" * 10_000),
        (topic, orjson.dumps({**good, "pad": "x" * 200_000})),
        (topic, orjson.dumps({**good, "active_power_kw": rng.choice([1e308, -1e308, -5])})),
        (topic, orjson.dumps({**good, "timestamp": rng.choice(HOSTILE_TIMES)})),
        (topic, orjson.dumps({**good, "timestamp": rng.choice(
            ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"])})),
        (topic, b'{"active_power_kw": NaN}'),
        (topic, orjson.dumps({**good, "voltage_v": True})),
        (f"meters/{r.facility_id}/{'m' * 300}", orjson.dumps(good)),
        ("meters/fac-999/nobody", orjson.dumps({**good, "facility_id": "fac-999"})),
        ("meters", orjson.dumps(good)),
        (topic, payload_of(late)),
    ]


async def mqtt_garbage(connect: Callable[[], MqttPublisher], fleet: Fleet, *, seed: int,
                       stop: asyncio.Event, every_s: float, sent: Counter[str]) -> None:
    """Publish a few garbage messages every ``every_s``; reconnect after a broker restart."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            async with connect() as pub:
                while not stop.is_set():
                    batch = garbage_messages(fleet, rng, datetime.now(UTC))
                    for topic, payload in rng.sample(batch, 3):
                        await pub.publish(topic, payload)
                        sent["garbage"] += 1
                    # publish() does not raise on a lost connection; its PUBACK wait does.
                    await pub.flush()
                    await _sleep_or_stop(stop, every_s)
        except Exception as exc:  # the broker restarting: connect again
            sent[f"publisher reconnect ({type(exc).__name__})"] += 1
            await _sleep_or_stop(stop, 1.0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _failing_checks(body: bytes) -> frozenset[str]:
    """The failing checks of a ``/healthz`` answer (empty when it is not one)."""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        doc = orjson.loads(body)
        if doc.get("status") == "degraded":
            return frozenset(k for k, v in doc["checks"].items() if not v.get("ok"))
    return frozenset()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def _qs(params: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v[:60]!r}" for k, v in params)


def _template(path: str) -> str:
    parts = path.split("/")
    if len(parts) > 3 and parts[2] in ("facilities", "dr-events"):
        parts[3] = "{id}"
    return "/".join(parts)
