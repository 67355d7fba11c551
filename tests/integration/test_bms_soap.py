"""The BMS connector against the BMS simulator over real SOAP (zeep on httpx -> aiohttp).

The simulator commands the same building models the meter simulator reads, so a shed is
checked where it matters: in the meter readings at a fixed instant, before and after. The
tests taking ``bms`` are the port's contract: they run against ``BmsClient`` over SOAP and
against ``LocalBms`` (the in-process fake for DR unit tests), which must behave alike.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.bms.soap import BmsClient
from simulators.bms.local import LocalBms
from simulators.bms.server import BmsServer
from simulators.bms.service import BmsService
from simulators.building import BuildingModel
from simulators.fleet import Fleet, build_fleet
from tables.ports.bms import (
    BmsCommand,
    BmsCommandFailed,
    BmsController,
    BmsRequestFailed,
    CommandResult,
)

pytestmark = pytest.mark.integration

FACILITY = "fac-001"  # New York
# A Wednesday afternoon in July, fully occupied: outdoor ~30 degC, so every zone is cooling
# with ~10 degC above its setpoint and neither clamped at 0 nor at rated kW.
HOT_AFTERNOON = datetime(2026, 7, 15, 14, 0, tzinfo=ZoneInfo("America/New_York"))
TIMEOUT_S = 2.0
Adapter = BmsClient | LocalBms


def meter_kw(fleet: Fleet, meter_id: str, at: datetime) -> float:
    (reading,) = [r for r in fleet.readings_at(at) if r.meter_id == meter_id]
    return reading.active_power_kw


@pytest.fixture
def fleet() -> Fleet:
    return build_fleet(facilities=2, meters_per_facility=5, seed=7)


@pytest.fixture
def model(fleet: Fleet) -> BuildingModel:
    return fleet.models[FACILITY]


@pytest.fixture
def service(fleet: Fleet) -> BmsService:
    return BmsService(fleet.models)


@pytest.fixture
async def server(service: BmsService) -> AsyncIterator[BmsServer]:
    async with BmsServer(service, host="127.0.0.1", port=0) as bms:
        yield bms


@pytest.fixture(params=["soap", "local"])
async def bms(request: pytest.FixtureRequest, service: BmsService
              ) -> AsyncIterator[Adapter]:
    if request.param == "local":
        yield LocalBms(service)
        return
    async with (BmsServer(service, host="127.0.0.1", port=0) as server,
                BmsClient(server.wsdl_url, timeout_s=TIMEOUT_S) as client):
        yield client


async def test_adapters_satisfy_the_port(bms: Adapter) -> None:
    port: BmsController = bms
    assert [z.zone_id for z in await port.list_zones(FACILITY)] == [
        "zone-1", "zone-2", "zone-3", "zone-4"]


async def test_lists_the_buildings_zones_and_groups(bms: Adapter, model: BuildingModel) -> None:
    zones = await bms.list_zones(FACILITY)
    groups = await bms.list_lighting_groups(FACILITY)

    assert [(z.zone_id, z.setpoint_offset_c, z.max_offset_c, z.rated_kw) for z in zones] == [
        (z.zone_id, 0.0, 10.0, z.rated_kw) for z in model.zones]
    assert [(g.group_id, g.level_pct, g.rated_kw) for g in groups] == [
        (g.group_id, 100.0, g.rated_kw) for g in model.lighting_groups]


async def test_setpoint_offset_sheds_hvac_in_the_meter_readings(
    bms: Adapter, fleet: Fleet, model: BuildingModel
) -> None:
    before_kw = meter_kw(fleet, f"{FACILITY}-hvac", HOT_AFTERNOON)

    for i, zone in enumerate(model.zones):
        result = await bms.set_zone_setpoint_offset(FACILITY, zone.zone_id, 2.0,
                                                    command_id=f"shed-{i}")
        assert result.ok and result.applied_at is not None and not result.replayed

    after_kw = meter_kw(fleet, f"{FACILITY}-hvac", HOT_AFTERNOON)
    # Cooling falls by the zone's slope per degree: rated * (1 - fan 0.12) / 16 per degC, times
    # 2 degC; the same hashed noise (+-3 %) multiplies before and after.
    expected_drop_kw = sum(z.rated_kw * 0.88 / 16 * 2.0 for z in model.zones)
    assert before_kw - after_kw == pytest.approx(expected_drop_kw, rel=0.031)
    assert [z.setpoint_offset_c for z in model.zones] == [2.0] * 4


async def test_dimming_sheds_lighting_in_the_meter_readings(
    bms: Adapter, fleet: Fleet, model: BuildingModel
) -> None:
    before_kw = meter_kw(fleet, f"{FACILITY}-lighting", HOT_AFTERNOON)

    for i, group in enumerate(model.lighting_groups):
        result = await bms.set_lighting_level(FACILITY, group.group_id, 40.0,
                                              command_id=f"dim-{i}")
        assert result.ok

    after_kw = meter_kw(fleet, f"{FACILITY}-lighting", HOT_AFTERNOON)
    # Fully occupied: 100 % -> 40 % dims the 95 % dimmable share by 60 %: 0.57 of rated kW.
    rated_kw = sum(g.rated_kw for g in model.lighting_groups)
    assert before_kw - after_kw == pytest.approx(0.57 * rated_kw, rel=1e-9)


async def test_point_values_show_the_command(bms: Adapter) -> None:
    await bms.set_zone_setpoint_offset(FACILITY, "zone-2", 1.5, command_id="pv-1")

    values = await bms.get_point_values(FACILITY)

    by_id = {p.point_id: p for p in values.points}
    assert by_id["hvac:zone-2/setpoint_offset_c"].value == 1.5
    assert by_id["hvac:zone-2/setpoint_offset_c"].unit == "degC"
    assert by_id["site/power_kw"].value > 0


async def test_a_replayed_command_id_returns_the_first_result_and_changes_nothing(
    bms: Adapter, model: BuildingModel
) -> None:
    first = await bms.set_zone_setpoint_offset(FACILITY, "zone-1", 2.0, command_id="cmd-1")
    later = await bms.set_zone_setpoint_offset(FACILITY, "zone-1", 1.0, command_id="cmd-2")
    assert later.ok

    replay = await bms.set_zone_setpoint_offset(FACILITY, "zone-1", 2.0, command_id="cmd-1")

    assert replay.replayed and replay.ok
    assert (replay.command_id, replay.applied_at) == (first.command_id, first.applied_at)
    assert model.zones[0].setpoint_offset_c == 1.0  # cmd-2 still holds


async def test_a_command_id_reused_for_another_command_is_refused(
    bms: Adapter, model: BuildingModel
) -> None:
    await bms.set_lighting_level(FACILITY, "floor-1", 50.0, command_id="cmd-1")

    reused = await bms.set_lighting_level(FACILITY, "floor-2", 50.0, command_id="cmd-1")

    assert (reused.failure, reused.fault_code) == ("fault", "command_id_conflict")
    assert model.lighting_groups[1].level_pct == 100.0


@pytest.mark.parametrize(
    ("zone_id", "offset_c", "fault_code", "message"),
    [
        ("zone-1", 12.0, "out_of_range", "setpoint offset 12.0 degC is outside +-10.0 degC"),
        ("zone-1", -10.5, "out_of_range", "setpoint offset -10.5 degC is outside +-10.0 degC"),
        ("zone-9", 1.0, "unknown_zone", "fac-001 has no HVAC zone 'zone-9'"),
    ],
)
async def test_a_refused_command_is_a_typed_failure_with_the_fault_message(
    bms: Adapter, model: BuildingModel, zone_id: str, offset_c: float,
    fault_code: str, message: str,
) -> None:
    result = await bms.set_zone_setpoint_offset(FACILITY, zone_id, offset_c, command_id="bad-1")

    assert result == CommandResult("bad-1", False, None, message, "fault", fault_code)
    with pytest.raises(BmsCommandFailed, match=f"failed \\(fault \\[{fault_code}\\]\\)"):
        result.raise_for_failure()
    assert all(z.setpoint_offset_c == 0.0 for z in model.zones)


async def test_injected_failures_and_overrides(bms: Adapter, service: BmsService,
                                               model: BuildingModel) -> None:
    service.faults.fail_next_commands = 1
    service.faults.overridden_ids.add("floor-3")

    failed = await bms.set_lighting_level(FACILITY, "floor-1", 30.0, command_id="f-1")
    overridden = await bms.set_lighting_level(FACILITY, "floor-3", 30.0, command_id="f-2")
    fine = await bms.set_lighting_level(FACILITY, "floor-1", 30.0, command_id="f-3")
    replayed_failure = await bms.set_lighting_level(FACILITY, "floor-1", 30.0,
                                                    command_id="f-1")

    assert (failed.failure, failed.fault_code) == ("fault", "injected")
    assert (overridden.failure, overridden.accepted) == ("rejected", False)
    assert overridden.error == "floor-3 is under a local operator override"
    assert fine.ok
    # The outcome of f-1 was fixed by its first execution: still a failure, nothing applied.
    assert (replayed_failure.failure, replayed_failure.fault_code) == ("fault", "injected")
    assert [g.level_pct for g in model.lighting_groups] == [30.0, 100.0, 100.0, 100.0]


async def test_observers_see_each_command_once(bms: Adapter) -> None:
    seen: list[tuple[BmsCommand, CommandResult, float]] = []

    def failing_observer(command: BmsCommand, result: CommandResult, duration_s: float) -> None:
        raise RuntimeError("metrics are down")  # logged; must not change any result

    bms.observers = (failing_observer, lambda c, r, d: seen.append((c, r, d)))
    ok = await bms.set_zone_setpoint_offset(FACILITY, "zone-3", 1.0, command_id="o-1")
    bad = await bms.set_zone_setpoint_offset(FACILITY, "zone-3", 99.0, command_id="o-2")

    assert [(c.command_id, c.kind, c.target_id, c.value, r) for c, r, _ in seen] == [
        ("o-1", "zone_setpoint_offset", "zone-3", 1.0, ok),
        ("o-2", "zone_setpoint_offset", "zone-3", 99.0, bad)]
    assert all(d >= 0 for _, _, d in seen)


async def test_a_stalled_bms_times_out_once_without_retry(
    server: BmsServer, model: BuildingModel
) -> None:
    timeout_s = 0.3
    async with BmsClient(server.wsdl_url, timeout_s=timeout_s) as client:
        server.gate.stall()  # the BMS applies the command but its answer does not come
        started = time.monotonic()
        result = await client.set_zone_setpoint_offset(FACILITY, "zone-4", 3.0,
                                                       command_id="slow-1")
        elapsed_s = time.monotonic() - started
        server.gate.release()

        assert result.failure == "timeout" and not result.accepted
        assert timeout_s <= elapsed_s < timeout_s + 1.0
        assert server.service.hits["SetZoneSetpointOffset"] == 1  # one request: no retry

        # A timeout leaves the outcome unknown; repeating the id tells it, applying nothing.
        learned = await client.set_zone_setpoint_offset(FACILITY, "zone-4", 3.0,
                                                        command_id="slow-1")
    assert learned.ok and learned.replayed
    assert model.zones[3].setpoint_offset_c == 3.0


async def test_a_bms_that_is_down_is_a_quick_typed_failure(server: BmsServer) -> None:
    async with BmsClient(server.wsdl_url, timeout_s=TIMEOUT_S) as client:
        await server.stop()
        started = time.monotonic()
        result = await client.set_lighting_level(FACILITY, "floor-1", 50.0, command_id="d-1")
        with pytest.raises(BmsRequestFailed) as query_failure:
            await client.list_zones(FACILITY)
        elapsed_s = time.monotonic() - started

    assert result.failure == "transport" and not result.accepted
    assert result.error is not None and "cannot reach the BMS" in result.error
    assert query_failure.value.failure == "transport"
    assert elapsed_s < TIMEOUT_S  # refused at once, not waited out


async def test_opening_against_a_bms_that_is_down_raises(server: BmsServer) -> None:
    url = server.wsdl_url
    await server.stop()

    with pytest.raises(BmsRequestFailed, match="cannot read the BMS WSDL") as failure:
        await BmsClient(url, timeout_s=TIMEOUT_S).open()
    assert failure.value.failure == "transport"


async def test_a_query_for_an_unknown_facility_raises_with_the_fault(bms: Adapter) -> None:
    with pytest.raises(BmsRequestFailed, match="no facility 'fac-999'") as failure:
        await bms.list_lighting_groups("fac-999")
    assert (failure.value.failure, failure.value.fault_code) == ("fault", "unknown_facility")


async def test_the_shipped_wsdl_file_with_a_service_url(server: BmsServer) -> None:
    from importlib import resources

    wsdl_path = str(resources.files("simulators.bms").joinpath("bms.wsdl"))
    async with BmsClient(wsdl_path, service_url=server.url, timeout_s=TIMEOUT_S) as client:
        zones = await client.list_zones("fac-002")
    assert len(zones) == 4 and all(math.isfinite(z.rated_kw) for z in zones)


async def test_the_standalone_simulator() -> None:
    """``python -m simulators.bms`` as docs/bms.md runs it: a free port, then a command."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.bms", "--port", "0", "--facilities", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        wsdl_url = line.removeprefix("BMS simulator: ").strip()
        async with BmsClient(wsdl_url, timeout_s=TIMEOUT_S) as client:
            result = await client.set_lighting_level(FACILITY, "floor-1", 60.0,
                                                     command_id="cli-1")
            groups = await client.list_lighting_groups(FACILITY)
        assert result.ok and groups[0].level_pct == 60.0
    finally:
        process.terminate()
        await process.wait()


async def test_the_example_in_the_docs_runs() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "bms.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert re.fullmatch(r"True \S+ \S+ \d+\.\d kW shed 1\n", out.decode()), out.decode()
