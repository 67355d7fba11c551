"""The rollup service: folds validated readings into event-time windows and stores,
atomically, the accepted readings, the closed windows, the late dead letters and the new
checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Gauge

from agents.item_failures import ItemFailures
from core import acks
from core.acks import Ack
from core.channels import Sink
from core.logs import trace_id_var
from core.looplag import Yielder
from core.metrics import Metrics
from schemas.deadletter import DeadLetter, RejectReason
from schemas.reading import SensorReading
from schemas.rollup import Rollup, WindowName
from schemas.validation import dead_letter
from tables.ports.store import StoreUnavailable
from tables.ports.timeseries import CommitBatch, TimeSeriesStore
from tables.ports.window_state import WindowStateStore
from tables.rollups import (
    Checkpoint,
    Outcome,
    RollupAggregator,
    to_datetime,
    to_ms,
)
from tables.windows import WINDOW_MS, window_start

log = logging.getLogger(__name__)

READINGS_SOURCE = "sensor-readings"


@dataclass(slots=True)
class _Folded:
    """A folded batch on its way to the store, and what follows its commit."""

    batch: CommitBatch
    states: dict[str, bytes] = field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0
    ack: Ack | None = None
    started: float | None = None
    trace_id: str | None = field(default_factory=trace_id_var.get)
    """The batch's trace id, for the committer's (and the store connectors') log records."""


class RollupService:
    """Owns the window state of the facilities routed to this process.

    Folding and storing overlap: while batch N is being committed (in the store's writer
    thread), batch N+1 is folded. Commits run one at a time, in fold order, each retried until
    it succeeds; only after its commit is a batch's window state saved, its rollups published
    and its events acknowledged upstream, so a crash replays what was not yet stored. At most
    ``max_pending`` folded batches wait for the store (bounded memory, back-pressure).
    """

    def __init__(
        self,
        aggregator: RollupAggregator,
        *,
        store: TimeSeriesStore,
        metrics: Metrics,
        clock: Callable[[], datetime],
        outputs: Mapping[WindowName, Sink[Rollup]] | None = None,
        dead_letters: Sink[DeadLetter] | None = None,
        state_store: WindowStateStore | None = None,
        retry_delay_s: float = 1.0,
        max_pending: int = 2,
    ) -> None:
        self.aggregator = aggregator
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.outputs = outputs or {}
        self.dead_letters = dead_letters
        """Where the dead letters of a batch go once stored (the kafka runtime's dead-letter
        topic, for data engineers who read it); the store has them either way."""
        self.state_store = state_store
        self.retry_delay_s = retry_delay_s
        self._lock = asyncio.Lock()
        self._pending: asyncio.Queue[_Folded] = asyncio.Queue(maxsize=max_pending)
        self._committer: asyncio.Task[None] | None = None
        self._last_reading_s: dict[tuple[str, str], float] = {}
        self._last_reading_gauges: dict[tuple[str, str], Gauge] = {}
        self._give_way = Yielder()
        """Folding a batch (or a recovery's replay) gives the event loop to the API every few
        ms: the fold runs in the process that serves it."""
        self._idle_failures = ItemFailures("rollup_idle", metrics, log)

    async def recover(self) -> int:
        """Rebuild open windows from the store after a restart. Returns readings replayed."""
        replayed = 0
        async with self._lock:
            now_ms = to_ms(self.clock())
            for cp in await self.store.checkpoints():
                replayed += await self._recover_facility(cp, now_ms)
        return replayed

    async def _recover_facility(self, cp: Checkpoint, now_ms: int) -> int:
        agg = self.aggregator
        carries: dict[str, tuple[int, float]] = {}
        minute_rollups: list[Rollup] = []
        since_ms = 0
        if cp.closed_until_ms is not None:
            since_ms = cp.closed_until_ms
            closed_until = to_datetime(since_ms)
            carries = {
                m: (to_ms(ts), kw)
                for m, (ts, kw) in (await self.store.carries(cp.facility_id, closed_until)).items()
            }
            open_hour = window_start(since_ms, WINDOW_MS[WindowName.HOUR_1])
            minute_rollups = await self.store.minute_rollups(
                cp.facility_id, to_datetime(open_hour), closed_until
            )
        agg.restore(cp, carries=carries, minute_rollups=minute_rollups, now_ms=now_ms)
        readings = await self.store.readings_since(cp.facility_id, to_datetime(since_ms))
        give_way = self._give_way
        for r in readings:
            agg.add(r.facility_id, r.meter_id, to_ms(r.timestamp), r.active_power_kw,
                    arrival_ms=now_ms)
            await give_way()
        rollups = agg.advance(cp.facility_id)
        await self._commit(CommitBatch(rollups=rollups,
                                       checkpoints=agg.checkpoints([cp.facility_id])))
        await self._publish(rollups)
        log.info("recovered %s: %d readings replayed into open windows", cp.facility_id,
                 len(readings))
        return len(readings)

    async def process(self, readings: list[SensorReading], *, ack: Ack | None = None,
                      rejected: Iterable[DeadLetter] = ()) -> None:
        """Fold a batch and hand it to the committer; ``ack`` is called once it is stored.
        ``rejected`` are the batch's records that were not readings, stored with it."""
        started = time.perf_counter()
        async with self._lock:
            agg = self.aggregator
            now_ms = to_ms(self.clock())
            accepted: list[SensorReading] = []
            late: list[SensorReading] = []
            touched: set[str] = set()
            duplicates = 0
            give_way = self._give_way
            for r in readings:
                await give_way()
                if self.state_store is not None and r.facility_id not in agg.facilities:
                    restored = self.state_store.load(r.facility_id)
                    if restored is not None:
                        agg.facilities[r.facility_id] = restored
                outcome = agg.add(r.facility_id, r.meter_id, to_ms(r.timestamp),
                                  r.active_power_kw, arrival_ms=now_ms)
                if outcome is Outcome.ACCEPTED:
                    accepted.append(r)
                    touched.add(r.facility_id)
                elif outcome is Outcome.DUPLICATE:
                    duplicates += 1
                else:
                    late.append(r)
            rollups: list[Rollup] = []
            for fid in sorted(touched):
                rollups.extend(agg.advance(fid))
                await give_way()
            dead = list(rejected)
            if late:
                # A late reading may repeat one that a batch still on its way stores, or one
                # accepted earlier in this very batch (an MQTT redelivery after a crash lands
                # behind newer readings, so its window may have closed in between).
                await self.flush()
            in_batch = {(a.meter_id, a.timestamp) for a in accepted} if late else set()
            for r in late:
                if (r.meter_id, r.timestamp) in in_batch or await self.store.has_reading(
                        r.meter_id, r.timestamp):
                    duplicates += 1
                    continue
                dead.append(self._late(r))
            await self._submit(_Folded(
                CommitBatch(accepted, rollups, dead, agg.checkpoints(touched)),
                states=self._encode(touched), accepted=len(accepted), duplicates=duplicates,
                ack=ack, started=started))

    async def tick(self) -> None:
        """Close the windows of facilities that went quiet. Each facility alone: one whose
        state cannot be loaded or closed (a watermark past what a datetime holds, a bug) is
        skipped, counted (``item_failures{loop="rollup_idle"}``) and logged once; the
        others' windows close."""
        async with self._lock:
            agg = self.aggregator
            if self.state_store is not None:
                # Facilities of this worker that sent nothing since it took them over.
                for fid in list(self.state_store.facility_ids()):
                    if fid not in agg.facilities:
                        try:
                            restored = self.state_store.load(fid)
                        except Exception as exc:
                            self._idle_failures.failed(fid, exc, what="idle tick skipped for")
                            continue
                        if restored is not None:
                            agg.facilities[fid] = restored
            now_ms = to_ms(self.clock())
            rollups: list[Rollup] = []
            idle_ms = agg.settings.idle_timeout_ms
            for fid, st in list(agg.facilities.items()):
                if st.last_arrival_ms is None or now_ms - st.last_arrival_ms < idle_ms:
                    continue
                # One facility's view of the aggregator (its state object is shared), so
                # that an exception stops this facility's idle close and no other's; the
                # state as it was is put back, so a failed close loses no samples.
                one = RollupAggregator(agg.registry, agg.settings)
                one.facilities[fid] = st
                before = copy.deepcopy(st)  # a quiet facility's state: a few open windows
                try:
                    rollups.extend(one.advance_idle(now_ms))
                except Exception as exc:
                    agg.facilities[fid] = before
                    self._idle_failures.failed(fid, exc, what="idle tick skipped for")
                    continue
                self._idle_failures.succeeded(fid)
            if not rollups:
                return
            touched = {r.facility_id for r in rollups}
            await self._submit(_Folded(
                CommitBatch(rollups=rollups, checkpoints=agg.checkpoints(touched)),
                states=self._encode(touched)))

    def _encode(self, facility_ids: Iterable[str]) -> dict[str, bytes]:
        """The touched facilities' state as of this fold: one state write per facility per
        batch, never per reading, saved after the batch's commit. A crash between the two
        replays the batch, which the store absorbs idempotently."""
        if self.state_store is None:
            return {}
        facilities = self.aggregator.facilities
        return {f: self.state_store.encode(facilities[f]) for f in sorted(facility_ids)}

    async def _submit(self, folded: _Folded) -> None:
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_forever(), name="rollup-commits")
        await self._unless_committer_failed(self._pending.put(folded))

    async def _unless_committer_failed(self, waiting: Awaitable[None]) -> None:
        """Await ``waiting``; raise instead if the committer has died (a bug, not a store
        outage, which it retries), so that agents fail loudly rather than hang."""
        committer = self._committer
        if committer is None:
            await waiting
            return
        task = asyncio.ensure_future(waiting)
        await asyncio.wait({task, committer}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise RuntimeError("the rollup committer stopped") from (
                None if committer.cancelled() else committer.exception())
        task.result()

    async def _commit_forever(self) -> None:
        while True:
            folded = await self._pending.get()
            token = trace_id_var.set(folded.trace_id)
            try:
                await self._commit(folded.batch)
                if self.state_store is not None and folded.states:
                    self.state_store.save(folded.states)
                m = self.metrics
                m.readings_accepted.inc(folded.accepted)
                self._record_last_readings(folded.batch.readings)
                m.readings_duplicate.inc(folded.duplicates)
                for d in folded.batch.dead_letters:
                    m.readings_rejected.labels(d.reason.value).inc()
                await self._publish(folded.batch.rollups, then=folded.ack,
                                    dead=folded.batch.dead_letters)
                if folded.started is not None:
                    m.batch_duration.observe(time.perf_counter() - folded.started)
            finally:
                trace_id_var.reset(token)
                self._pending.task_done()

    def _record_last_readings(self, readings: list[SensorReading]) -> None:
        """One gauge update per meter per batch (on-call's "meter went quiet" alert)."""
        seen = self._last_reading_s
        newer: dict[tuple[str, str], float] = {}
        for r in readings:
            key = (r.facility_id, r.meter_id)
            ts = r.timestamp.timestamp()
            if ts > newer.get(key, 0.0) and ts > seen.get(key, 0.0):
                newer[key] = ts
        gauges = self._last_reading_gauges
        for key, ts in newer.items():
            seen[key] = ts
            child = gauges.get(key)
            if child is None:  # labels() takes a lock and builds a key: once per meter
                child = gauges[key] = self.metrics.meter_last_reading.labels(*key)
            child.set(ts)

    async def flush(self) -> None:
        """Wait until every folded batch is stored, its state saved and its rollups sent (a
        batch's ack follows its rollups' delivery, which may come a moment later)."""
        await self._unless_committer_failed(self._pending.join())

    async def close(self) -> None:
        await self.flush()
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer

    async def release(self) -> None:
        """Partitions were reassigned: store what was folded, then drop the in-memory state
        (it reloads from the state store for facilities this worker still owns)."""
        async with self._lock:
            await self.flush()
            self.aggregator.facilities.clear()

    def _late(self, r: SensorReading) -> DeadLetter:
        st = self.aggregator.state(r.facility_id)
        closed = to_datetime(st.closed_until_ms or 0).isoformat()
        return dead_letter(
            RejectReason.LATE,
            f"reading at {r.timestamp.isoformat()} arrived after its window closed "
            f"(windows before {closed} are final; allowed lateness "
            f"{self.aggregator.settings.allowed_lateness_ms / 1000:g} s)",
            payload=r.model_dump_json().encode(),
            source=READINGS_SOURCE,
            received_at=self.clock(),
        )

    async def _commit(self, batch: CommitBatch) -> None:
        """Store the batch, retrying while the store is down: the events stay unacknowledged
        upstream meanwhile, so nothing is lost and memory stays bounded by the channels."""
        if not batch:
            return
        while True:
            try:
                await self.store.commit(batch)
                return
            except StoreUnavailable as exc:
                log.error("store write failed, retrying in %.1f s: %s", self.retry_delay_s, exc)
                await asyncio.sleep(self.retry_delay_s)

    async def _publish(self, rollups: list[Rollup], *, then: Ack | None = None,
                       dead: list[DeadLetter] | None = None) -> None:
        """Send the rollups downstream; ``then`` fires once every one of them is handed on
        (stored by Kafka, or handled by the local subscribers), so a batch is acknowledged
        upstream only when its rollups cannot be lost. ``dead`` are copied to
        ``dead_letters`` without holding the batch."""
        emitted = self.metrics.rollups_emitted
        sends = [(r, self.outputs[r.window]) for r in rollups if r.window in self.outputs]
        for r in rollups:
            emitted.labels(r.window.value, r.scope.value).inc()
        ack = acks.after(len(sends), then) if then is not None else None
        for r, out in sends:
            await out.send(r, ack=ack)
        if dead and self.dead_letters is not None:
            await self._copy_dead_letters(self.dead_letters, dead)
        for fid, st in self.aggregator.facilities.items():
            if st.closed_until_ms is not None:
                self.metrics.watermark.labels(fid).set(st.closed_until_ms / 1000)

    @staticmethod
    async def _copy_dead_letters(out: Sink[DeadLetter], dead: list[DeadLetter]) -> None:
        """The store holds the dead letters; the copy for the topic's readers is not waited
        for, and one that cannot be sent (a foreign record too large for a Kafka record, say)
        is logged rather than allowed to stop the batch."""
        for d in dead:
            try:
                await out.send(d)
            except Exception:
                log.exception("dead letter (%s from %s) stored but not published", d.reason,
                              d.source)
