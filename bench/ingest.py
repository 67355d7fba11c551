"""Ingest throughput of the local runtime beside the broker's own, in the same run.

Each consumer drains a backlog of simulator readings already queued in its persistent MQTT
session, so the publisher's speed does not limit the result: ``mosquitto_sub`` (the broker's
ceiling at QoS 1), a bare aiomqtt subscriber (about the most a Python client on this MQTT stack
can take), and SEMS (MQTT -> validation -> rollups -> SQLite). Runs are interleaved and
reported as medians and ratios; SEMS's store is then checked for readings lost or counted
twice. Method and results: docs/performance.md.

    python -m bench.ingest [--readings 200000] [--repeat 3] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.backlog import Backlog, build_backlog, publish_backlog
from bench.consumers import BROKER_INFLIGHT, BareAiomqtt, Consumer, Drain, MosquittoSub
from bench.report import Results, machine_facts, print_report, write_json
from bench.sems import SemsRuntime
from connectors.mqtt import BrokerAddress
from core.looplag import freeze_startup_heap
from simulators.fleet import Fleet, build_fleet
from tests.servers import Mosquitto

Kind = Literal["mosquitto_sub", "bare aiomqtt", "SEMS local runtime"]
KINDS: tuple[Kind, ...] = ("mosquitto_sub", "bare aiomqtt", "SEMS local runtime")
SEMS: Kind = "SEMS local runtime"
PROFILE_TOP = 25


@dataclass(frozen=True, slots=True)
class Options:
    readings: int
    repeat: int
    facilities: int
    meters_per_facility: int
    seed: int
    json_path: Path | None
    profile: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200_000, help="backlog size (200000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per consumer (3)")
    p.add_argument("--facilities", type=int, default=100, help="fleet facilities (100)")
    p.add_argument("--meters", type=int, default=5, help="meters per facility (5)")
    p.add_argument("--seed", type=int, default=42, help="simulator seed (42)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--profile", action="store_true",
                   help="after the runs, drain once more under cProfile and print the top "
                        f"{PROFILE_TOP} functions by own time (event-loop thread only)")
    a = p.parse_args(argv)
    if a.readings < 1 or a.repeat < 1:
        p.error("--readings and --repeat must be at least 1")
    return Options(a.readings, a.repeat, a.facilities, a.meters, a.seed, a.json, a.profile)


@dataclass(frozen=True, slots=True)
class Bench:
    """What every run shares: the broker, the fleet, the backlog and a scratch folder."""

    broker: BrokerAddress
    fleet: Fleet
    backlog: Backlog
    workdir: Path


def consumer(kind: Kind, bench: Bench, *, run_id: str,
             profiler: cProfile.Profile | None = None) -> Consumer:
    client_id = f"bench-{run_id}"
    if kind == "mosquitto_sub":
        return MosquittoSub(bench.broker, client_id=client_id)
    if kind == "bare aiomqtt":
        return BareAiomqtt(bench.broker, client_id=client_id)
    return SemsRuntime(bench.broker, client_id=client_id, share_group=f"g-{run_id}",
                       fleet=bench.fleet, workdir=bench.workdir / run_id, profiler=profiler)


async def measure(c: Consumer, bench: Bench, *, results: Results | None = None) -> Drain:
    """Session first, then the backlog into it, then the timed drain; the session goes after
    so that no later backlog is queued for it."""
    await c.subscribe()
    try:
        publish_s = await publish_backlog(bench.broker.host, bench.broker.port, bench.backlog,
                                          client_id=f"pub-{uuid.uuid4().hex[:8]}")
        if results is not None:
            results.publish_per_s.append(bench.backlog.count / publish_s)
        # Every consumer starts as `sems run` does after its start-up: what is alive now
        # (imports, the backlog) is frozen out of the collector's full passes.
        freeze_startup_heap()
        return await c.drain(bench.backlog.count)
    finally:
        await c.forget()


def run_order(rep: int) -> tuple[Kind, ...]:
    """Rotate who goes first, so that no consumer always runs on a warm (or cold) machine."""
    shift = rep % len(KINDS)
    return KINDS[shift:] + KINDS[:shift]


async def profile_sems(bench: Bench) -> str:
    profiler = cProfile.Profile()
    await measure(consumer(SEMS, bench, run_id="profile", profiler=profiler), bench)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(PROFILE_TOP)
    return out.getvalue()


async def run(opts: Options) -> tuple[Results, str | None]:
    fleet = build_fleet(facilities=opts.facilities, meters_per_facility=opts.meters_per_facility,
                        seed=opts.seed)
    backlog = await build_backlog(fleet, readings=opts.readings)
    results = Results(readings=backlog.count, repeat=opts.repeat, machine=machine_facts(),
                      fleet=f"{opts.facilities} facilities x {opts.meters_per_facility} "
                            f"meters, seed {opts.seed}")
    with tempfile.TemporaryDirectory(prefix="sems-bench-") as tmp:
        mosquitto = Mosquitto(Path(tmp) / "mosquitto",
                              max_inflight_messages=BROKER_INFLIGHT).start()
        try:
            bench = Bench(BrokerAddress.parse(mosquitto.url), fleet, backlog, Path(tmp))
            for rep in range(opts.repeat):
                for kind in run_order(rep):
                    run_id = f"{rep + 1}-{KINDS.index(kind)}"
                    drain = await measure(consumer(kind, bench, run_id=run_id), bench,
                                          results=results)
                    results.drains.append(drain)
                    print(f"run {rep + 1}/{opts.repeat} {kind}: "
                          f"{drain.readings_per_s:,.0f} readings/s", file=sys.stderr)
            profile = await profile_sems(bench) if opts.profile else None
            if mosquitto.dropped_messages_logged():
                print("warning: mosquitto logged dropped messages", file=sys.stderr)
        finally:
            mosquitto.stop()
    position: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
    results.drains.sort(key=lambda d: position[d.consumer])
    return results, profile


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results, profile = asyncio.run(run(opts))
    print_report(results, sems=SEMS, baselines=("bare aiomqtt", "mosquitto_sub"))
    if opts.json_path is not None:
        write_json(results, opts.json_path)
    if profile is not None:
        print(f"\ncProfile of one more SEMS drain (event-loop thread), top {PROFILE_TOP} by "
              f"tottime:\n{profile}")
    return 0 if results.clean() else 1


if __name__ == "__main__":
    sys.exit(main())
