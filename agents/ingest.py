"""Ingest agent: raw meter payloads in, validated readings or dead letters out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

from core.channels import Batch, Sink
from core.logs import new_trace_id, trace_id_var
from core.looplag import Yielder
from core.metrics import Metrics
from schemas.deadletter import DeadLetter
from schemas.metadata import Registry
from schemas.raw import RawMessage
from schemas.reading import SensorReading
from schemas.validation import ValidationSettings, validate_reading


async def ingest_agent(
    batches: AsyncIterator[Batch[RawMessage]],
    *,
    readings: Sink[SensorReading],
    dead_letters: Sink[DeadLetter],
    registry: Callable[[], Registry],
    settings: ValidationSettings,
    metrics: Metrics,
    clock: Callable[[], datetime],
) -> None:
    rejected = metrics.readings_rejected
    # A batch (up to batch_max messages) takes tens of ms to validate: it gives way to the
    # API's requests every few ms rather than holding the event loop that long.
    give_way = Yielder()
    async for batch in batches:
        # One trace id per batch: its log records, and the Kafka records it produces (header
        # sems-trace-id), carry it to the worker that folds them.
        trace_id_var.set(new_trace_id())
        reg = registry()
        now = clock()
        # Each message's ack (its PUBACK) goes on with what it became: the broker hears of it
        # once the reading or its dead letter is stored.
        for msg, ack in zip(batch.values, batch.acks, strict=True):
            result = validate_reading(
                msg.payload, topic=msg.topic, registry=reg, now=now, settings=settings
            )
            if isinstance(result, SensorReading):
                await readings.send(result, ack=ack)
            else:
                rejected.labels(result.reason.value).inc()
                await dead_letters.send(result, ack=ack)
            await give_way()
