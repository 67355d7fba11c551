"""Per-item loops handle each facility alone (issue 13, property 1): a facility whose forecast,
model choice or idle tick fails is skipped with a reason, counted in
``sems_item_failures_total{loop}``, logged once, and the other facilities and the loop go on.
Model choices and fits run in a worker process that a timeout or ``close`` kills (property 9).
Real SQLite stores; the failures come from the data (a zone that does not exist, a weather
provider's garbage, a watermark past year 9999), not from patched code."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from agents.deadletter import dead_letter_agent
from agents.forecast import ForecastService, forecast_agent
from agents.forecast_pool import WorkerLost, WorkTimeout
from agents.rollup import idle_timer
from agents.rollup_service import RollupService
from connectors.postgres.migrate import upgrade
from connectors.sqlite import SqliteStore
from connectors.weather import ClimatologyWeather
from core.channels import Channel
from core.logs import TraceIdFilter
from core.metrics import Metrics
from schemas.deadletter import DeadLetter
from schemas.forecast import LoadForecast
from schemas.metadata import Facility, Meter, MeterType, Registry
from schemas.raw import RawMessage
from schemas.reading import SensorReading
from schemas.rollup import Scope, WindowName
from schemas.validation import ValidationSettings, validate_reading
from simulators.fleet import build_fleet
from streams.stores import build_store
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch
from tables.ports.weather import Location
from tables.rollups import RollupAggregator, WindowSettings
from tests.integration.helpers import (
    count_is,
    eventually,
    production_settings,
    settings,
    start_runtime,
)
from tests.integration.test_forecast_agent import NOW, SITE, quarters
from tests.servers import InfluxDB, Postgres, wait_until

pytestmark = pytest.mark.integration

BAD_ZONE = Facility(facility_id="plant-zone", name="Zone", contract_demand_kw=100,
                    timezone="Mars/Olympus_Mons")  # bad metadata: no such IANA zone
HOT = Facility(facility_id="plant-hot", name="Hot", contract_demand_kw=100, latitude=10.0,
               longitude=20.0)  # its weather comes back as text
YOUNG = Facility(facility_id="plant-young", name="Young", contract_demand_kw=100)
LATER = Facility(facility_id="plant-later", name="Later", contract_demand_kw=100)


class GarbageWeatherAt(ClimatologyWeather):
    """A provider that answers for one location with text instead of °C (a broken upstream
    API), and with climatology elsewhere."""

    async def hourly_temperature_c(self, location: Location, *, start: datetime,
                                   end: datetime) -> pd.Series:
        if location == Location(HOT.latitude or 0, HOT.longitude or 0):
            index = pd.date_range(start, end, freq="1h", tz="UTC")
            return pd.Series(["hot"] * len(index), index=index)
        return await super().hourly_temperature_c(location, start=start, end=end)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await s.open()
    await s.upsert_facilities([SITE, BAD_ZONE, HOT, YOUNG])
    await s.commit(CommitBatch(rollups=[*quarters(SITE.facility_id, 21),
                                        *quarters(BAD_ZONE.facility_id, 3),
                                        *quarters(HOT.facility_id, 3),
                                        *quarters(YOUNG.facility_id, 2)]))
    yield s
    await s.close()


def service(store: SqliteStore, published: list[LoadForecast] | None = None,
            **options: float) -> ForecastService:
    out = published if published is not None else []

    async def publish(f: LoadForecast) -> None:
        out.append(f)

    return ForecastService(store, GarbageWeatherAt(), publish=publish, metrics=store.metrics,
                           clock=lambda: NOW, **options)  # type: ignore[arg-type]


def failures(metrics: Metrics, loop: str) -> float:
    return metrics.registry.get_sample_value("sems_item_failures_total", {"loop": loop}) or 0.0


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def logged(caplog: pytest.LogCaptureFixture, facility_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and facility_id in r.getMessage()]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def worker_busy(svc: ForecastService) -> None:
    """Wait until the (one, idle) worker computes: its CPU time grows only once a call
    submitted to it runs, so the call holds the worker and is past the pool's queue."""
    (pid,) = svc._runner.worker_pids()
    idle_s = cpu_s(pid)

    async def computing() -> bool:
        return cpu_s(pid) >= idle_s + 0.05

    await eventually(computing, timeout_s=30, what="the worker to run the choice",
                     poll_s=0.01)


async def test_a_failing_facility_is_skipped_counted_and_logged_once_per_reason(
    store: SqliteStore, caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service(store)
    caplog.handler.addFilter(TraceIdFilter())
    try:
        with caplog.at_level(logging.INFO, logger="agents"):
            cycles = [await svc.run_cycle([BAD_ZONE, SITE, HOT, YOUNG]) for _ in range(3)]
    finally:
        svc.close()
    for made in cycles:  # the facilities after the failing ones are forecast every cycle
        assert [f.facility_id for f in made] == ["plant-a", "plant-young"]
    m = store.metrics
    assert failures(m, "forecast") == 6  # 2 facilities x 3 cycles
    assert sample(m, "sems_forecasts_total", result="bad_input") == 3  # the zone
    assert sample(m, "sems_forecasts_total", result="error") == 3  # the text weather
    assert sample(m, "sems_forecasts_total", result="ok") == 6
    for fid, reason in (("plant-zone", "unknown time zone"), ("plant-hot", "ValueError")):
        records = logged(caplog, fid)
        assert len(records) == 1, [r.getMessage() for r in records]  # once, not every cycle
        assert reason in records[0].getMessage()
        assert getattr(records[0], "trace_id", None)  # the attempt's trace id


async def test_a_failing_model_choice_does_not_stop_the_other_facilities_choices(
    store: SqliteStore, caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service(store)
    chooser = asyncio.create_task(svc.choose_forever())
    m = store.metrics
    try:
        with caplog.at_level(logging.INFO, logger="agents"):
            await svc.run_cycle([HOT, YOUNG])  # queues both choices, the failing one first

            async def young_chosen() -> bool:
                return "plant-young" in caplog.text and "forecast model for" in caplog.text

            await eventually(young_chosen, timeout_s=60, what="plant-young's model choice")
        assert failures(m, "forecast_choice") == 1
        assert not chooser.done()  # the loop goes on
        assert len(logged(caplog, "plant-hot")) == 2  # its forecast, its model choice
        # The failed choice is not queued again at every cycle (seconds of CPU each): a
        # facility queued after it in the next cycle gets its choice, and plant-hot's was
        # not tried again before it (the queue is first in, first out).
        await store.upsert_facilities([LATER])
        await store.commit(CommitBatch(rollups=quarters(LATER.facility_id, 2)))
        with caplog.at_level(logging.INFO, logger="agents"):
            await svc.run_cycle([HOT, LATER])

            async def later_chosen() -> bool:
                return "forecast model for plant-later" in caplog.text

            await eventually(later_chosen, timeout_s=60, what="plant-later's model choice")
        assert failures(m, "forecast_choice") == 1
    finally:
        chooser.cancel()
        svc.close()


async def test_a_choice_past_its_timeout_kills_its_worker_and_the_forecasts_go_on(
    store: SqliteStore,
) -> None:
    svc = service(store, choice_timeout_s=0.2)  # a 21-day backtest takes seconds
    try:
        await svc.run_cycle([YOUNG])  # the worker is up
        pids = svc._runner.worker_pids()
        assert len(pids) == 1
        with pytest.raises(WorkTimeout):
            await svc.choose(SITE)

        async def killed() -> bool:
            return not pids & {p.pid for p in multiprocessing.active_children()}

        await eventually(killed, timeout_s=10, what="the hung worker's end")
        made = await svc.run_cycle([SITE])  # a fresh worker forecasts
        assert [f.facility_id for f in made] == ["plant-a"]
    finally:
        svc.close()


async def test_a_refit_waiting_behind_a_choice_is_not_timed_out_for_the_wait(
    store: SqliteStore,
) -> None:
    """One worker: the cycle's refit (ms) waits for the backtest under way (seconds). Its
    timeout counts from when it runs, so neither is killed."""
    svc = service(store)
    try:
        await svc.run_cycle([YOUNG])  # the worker is up (its start-up took seconds)
        svc.fit_timeout_s = 0.3  # a refit takes ~20 ms; the backtest ahead of it, ~1 s
        choosing = asyncio.create_task(svc.choose(SITE))
        await worker_busy(svc)  # the choice holds the worker
        started = time.perf_counter()
        made = await svc.run_cycle([YOUNG])
        waited_s = time.perf_counter() - started
        choice = await choosing
        assert [f.facility_id for f in made] == ["plant-young"]
        # It did wait past its timeout behind the choice: a timeout counted from the call
        # (not from when the worker takes it) would have failed it and killed the choice.
        assert waited_s > svc.fit_timeout_s
        assert choice.scores
        assert failures(store.metrics, "forecast") == 0
    finally:
        svc.close()


async def test_close_does_not_wait_for_a_running_choice(store: SqliteStore) -> None:
    svc = service(store)
    await svc.run_cycle([YOUNG])
    pids = svc._runner.worker_pids()
    choosing = asyncio.create_task(svc.choose(SITE))  # seconds of backtest
    await worker_busy(svc)  # it runs in the worker: close must not wait for it
    started = time.perf_counter()
    svc.close()
    closed_s = time.perf_counter() - started
    with pytest.raises((WorkerLost, asyncio.CancelledError)):
        await choosing

    async def killed() -> bool:
        return not pids & {p.pid for p in multiprocessing.active_children()}

    await eventually(killed, timeout_s=5, what="the worker's end")
    assert closed_s < 1.0


async def test_the_forecast_agent_rides_out_a_store_outage(
    store: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[LoadForecast] = []
    svc = service(store, published)
    await store.close()  # the store is down when the agent starts
    polls = 0
    down_facilities = store.facilities

    async def counted_facilities() -> list[Facility]:  # counts the agent's polls, no more
        nonlocal polls
        polls += 1
        return await down_facilities()

    monkeypatch.setattr(store, "facilities", counted_facilities)
    agent = asyncio.create_task(forecast_agent(svc, interval_s=900, delay_s=60, poll_s=0.01,
                                               retry_s=0.05))
    back = SqliteStore(tmp_path / "sems.db", metrics=store.metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="agents"):
            async def outage_seen() -> bool:
                return "store is" in caplog.text
            await eventually(outage_seen, timeout_s=10, what="the outage in the log")
            seen_at = polls

            async def polled_on() -> bool:
                return polls >= seen_at + 3 or agent.done()

            await eventually(polled_on, timeout_s=10, what="several polls against the down store")
            assert not agent.done()
            await back.open()
            svc.store = back  # the store is back (a fresh connection)

            async def forecast_made() -> bool:
                return any(f.facility_id == "plant-a" for f in published)
            await eventually(forecast_made, timeout_s=60, what="plant-a's forecast")
        outage_lines = [r for r in caplog.records if "store is" in r.getMessage()]
        assert len(outage_lines) == 1  # once per outage, not once per poll
    finally:
        agent.cancel()
        svc.close()
        await back.close()


# -- the rollup idle tick ---------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
END_OF_TIME = datetime(9999, 12, 31, 23, 59, 45, tzinfo=UTC)


def reading(facility_id: str, at: datetime) -> SensorReading:
    """Built without validation: validation now refuses a year-9999 reading, but a store
    written before that bound may still replay one."""
    return SensorReading.model_construct(
        facility_id=facility_id, meter_id=f"{facility_id}-main", meter_type=MeterType.MAIN,
        timestamp=at, active_power_kw=10.0, reactive_power_kvar=1.0, voltage_v=400.0,
        frequency_hz=50.0)


async def test_an_idle_tick_closes_the_other_facilities_windows_when_one_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A facility whose watermark runs past year 9999 cannot close its windows (no datetime
    holds their end); the quiet facility beside it still gets its minutes closed."""
    ids = ("plant-z", "plant-a")  # the failing one first: it must not stop the other
    registry = Registry.build(
        [Facility(facility_id=f, name=f, contract_demand_kw=100) for f in ids],
        [Meter(meter_id=f"{f}-main", facility_id=f, meter_type=MeterType.MAIN) for f in ids])
    store = SqliteStore(tmp_path / "sems.db", metrics=Metrics())
    await store.open()
    now = [T0]
    svc = RollupService(RollupAggregator(registry, WindowSettings(30_000, 60_000)),
                        store=store, metrics=store.metrics, clock=lambda: now[0],
                        retry_delay_s=0.01)
    await svc.process([reading("plant-z", END_OF_TIME),
                       *(reading("plant-a", T0 + timedelta(seconds=s)) for s in (0, 15, 30))])
    await svc.flush()
    now[0] = T0 + timedelta(minutes=3)  # both went quiet
    timer = asyncio.create_task(idle_timer(svc, interval_s=0.01))
    try:
        with caplog.at_level(logging.WARNING, logger="agents"):
            async def closed() -> bool:
                rows = await store.rollups(scope=Scope.FACILITY, scope_id="plant-a",
                                           window=WindowName.MIN_1, start=T0,
                                           end=T0 + timedelta(minutes=5), limit=10)
                return len(rows) >= 1

            await eventually(closed, timeout_s=10, what="plant-a's idle-closed minute")
            await eventually(lambda: _at_least(store.metrics, 3), timeout_s=10,
                             what="three failed ticks of plant-z")
        assert not timer.done()
        assert len(logged(caplog, "plant-z")) == 1  # once, not every 10 ms
        assert "year 10000 is out of range" in logged(caplog, "plant-z")[0].getMessage()
    finally:
        timer.cancel()
        await svc.close()
        await store.close()


async def _at_least(metrics: Metrics, count: float) -> bool:
    return failures(metrics, "rollup_idle") >= count


# -- the ingest agent under hostile MQTT payloads -----------------------------------------

def hostile_payloads(topic: str, valid: str) -> list[bytes]:
    """One of each kind the property tests generate (tests/unit/test_reading_payload_
    properties.py), plus seeded random bytes: what reaches ``raw`` from an open broker."""
    rng = random.Random(13)
    fields = json.loads(valid)
    extremes: list[dict[str, object]] = [
        {**fields, "timestamp": "0001-01-01T00:07:00+05:00"},  # raised OverflowError before
        {**fields, "timestamp": "9999-12-31T23:00:00-05:00"},
        {**fields, "timestamp": "9999-12-31T23:59:59Z"},
        {**fields, "active_power_kw": 1e308},
        {**fields, "active_power_kw": True},
        {**fields, "active_power_kw": "50"},
        {**fields, "meter_id": fields["meter_id"] + "\u0000junk"},
        {**fields, "facility_id": "f" * 100_000},
        {**fields, "meter_type": "\ud83d\udd25"},
    ]
    return [
        b"", b"\x00" * 64, b"\xff\xfe garbage", b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 3_000 + b"1" + b"}" * 3_000, b"NaN", b"null", b"[]", b'"reading"',
        valid.replace("}", ', "active_power_kw": NaN}').encode(),
        valid.replace("}", ', "extra": Infinity}').encode(),
        *(json.dumps(e).encode("utf-8", "surrogatepass") for e in extremes),
        *(rng.randbytes(rng.randrange(1, 512)) for _ in range(20)),
    ]


async def test_the_ingest_agent_keeps_running_after_hostile_payloads(tmp_path: Path) -> None:
    fleet = build_fleet(facilities=1, meters_per_facility=2, seed=3)
    runtime = await start_runtime(settings(tmp_path, forecast_enabled=False), fleet)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        first, second = fleet.readings_at(now - timedelta(seconds=now.second % 15))
        topic = f"meters/{first.facility_id}/{first.meter_id}"
        hostile = hostile_payloads(topic, first.model_dump_json())
        for raw in hostile:
            await runtime.raw.send(RawMessage(topic, raw, datetime.now(UTC)))
        await runtime.raw.send(RawMessage(topic, first.model_dump_json().encode(),
                                          datetime.now(UTC)))
        await eventually(
            lambda: count_is(runtime, "SELECT COUNT(*) FROM dead_letters", len(hostile)),
            timeout_s=30, what="a dead letter per hostile payload")
        await eventually(lambda: count_is(runtime, "SELECT COUNT(*) FROM readings", 1),
                         timeout_s=30, what="the valid reading after them")
        ingest = runtime._ingest
        assert ingest is not None and not ingest.done(), "the ingest agent stopped"
        # and it still takes readings: the next one lands too
        await runtime.raw.send(RawMessage(f"meters/{second.facility_id}/{second.meter_id}",
                                          second.model_dump_json().encode(), datetime.now(UTC)))
        await eventually(lambda: count_is(runtime, "SELECT COUNT(*) FROM readings", 2),
                         timeout_s=30, what="the next valid reading")
    finally:
        await runtime.stop()


async def test_the_dead_letter_agent_waits_out_a_store_outage(
    tmp_path: Path, influxdb: InfluxDB, own_postgres: Postgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL (the production profile's dead-letter table) stops while a dead letter is on
    its way: the agent retries the batch instead of stopping, and stores it once it is back."""
    upgrade(own_postgres.dsn)
    store = build_store(production_settings(tmp_path, influxdb, own_postgres.dsn,
                                            postgres_timeout_s=1.0), Metrics())
    await store.open()
    letters: Channel[DeadLetter] = Channel("sensor-readings.dlq", capacity=10)
    agent = asyncio.create_task(dead_letter_agent(letters.stream().take(10, within=0.01),
                                                  store=store, retry_delay_s=0.1))
    try:
        own_postgres.stop()
        letter = validate_reading(b"not json {", topic="meters/x/y", registry=Registry.build(
            [], []), now=datetime.now(UTC), settings=ValidationSettings())
        assert isinstance(letter, DeadLetter)
        with caplog.at_level(logging.ERROR, logger="agents.deadletter"):
            await letters.send(letter)

            async def refused() -> bool:
                return "dead letters not stored" in caplog.text or agent.done()

            await eventually(refused, timeout_s=30, what="a failed attempt")
        assert not agent.done(), "the dead-letter agent stopped"
        own_postgres.start()

        async def stored() -> bool:
            try:
                return [d.raw_payload for d in await store.dead_letters(limit=10)] == [
                    letter.raw_payload]
            except StoreUnavailable:
                return False

        await eventually(stored, timeout_s=30, what="the dead letter after the outage")
    finally:
        agent.cancel()
        await store.close()


ORPHAN = """
import asyncio, os, signal, sys, time
from pathlib import Path
from agents.forecast_pool import ProcessRunner

def hang(marker: str) -> None:
    Path(marker).touch()  # the worker has taken the call
    time.sleep(600)  # a fit that never ends

async def main() -> None:
    runner = ProcessRunner()
    await runner.run(os.getpid)
    hung = asyncio.ensure_future(runner.run(hang, sys.argv[1]))
    deadline = time.monotonic() + 30
    while not os.path.exists(sys.argv[1]):
        if time.monotonic() > deadline:
            sys.exit("the worker never took the call")
        await asyncio.sleep(0.01)
    print(*runner.worker_pids(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a kill -9 would

if __name__ == "__main__":
    asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_forecast_worker_ends_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    """A worker busy in a fit when ``sems run`` is killed does not run on as an orphan."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "in-the-fit")],
                          capture_output=True, timeout=60,
                          cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (worker,) = (int(p) for p in done.stdout.split())

    try:
        wait_until(lambda: not running(worker), timeout_s=10, what="the orphaned worker's end")
    finally:
        if running(worker):
            os.kill(worker, signal.SIGKILL)
