"""A commercial-building load model: weather, occupancy and separately controllable loads.

Every value is a pure function of (seed, facility, load, timestamp). Noise comes from hashing
those values, never from a shared RNG, so a result does not depend on call order or on which
other facilities or meters were simulated. HVAC zones and lighting groups are separate objects
with mutable setpoint offsets and dimming levels because demand response commands them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast, get_args
from zoneinfo import ZoneInfo

LoadKind = Literal["hvac", "lighting", "plug", "process", "base", "other"]

POWER_FACTOR: Mapping[LoadKind, float] = {
    "hvac": 0.90,  # induction motors: compressors, fans, pumps
    "lighting": 0.96,  # LED drivers with power-factor correction
    "plug": 0.93,
    "process": 0.91,  # refrigeration compressors
    "base": 0.95,  # servers behind PFC power supplies
    "other": 0.92,
}

WEEKEND_OCCUPANCY = 0.15
SEASON_PEAK_DAY = 201  # about 20 July, the warmest day of a northern-hemisphere year
MAX_SETPOINT_OFFSET_C = 10.0
PLUG_IDLE_FRACTION = 0.3  # standby PCs, vending machines, chargers at night
OTHER_SHARE_OF_BASE = 0.4  # extra "other" circuits are broken out of the base load

# Defaults for size_scale=1: a mid-size office of about 500 kW contract demand.
DEFAULT_ZONES = 4
DEFAULT_ZONE_RATED_KW = 62.5
DEFAULT_FLOORS = 4
DEFAULT_FLOOR_LIGHTING_KW = 17.5
DEFAULT_BASE_KW = 50.0
DEFAULT_PROCESS_KW = 25.0
DEFAULT_PLUG_PEAK_KW = 80.0
HVAC_KW_PER_M2 = 0.025  # electrical kW at design conditions per conditioned m2


class UnknownLoadError(LookupError):
    """A zone or lighting group id that the building does not have."""


def unit_noise(*parts: object) -> float:
    """Uniform in [0, 1) from a stable hash (built-in ``hash`` is salted per process)."""
    key = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def signed_noise(*parts: object) -> float:
    """Uniform in [-1, 1) from a stable hash."""
    return 2.0 * unit_noise(*parts) - 1.0


def smooth_noise(t_s: float, *, period_s: float, key: tuple[object, ...]) -> float:
    """Value noise in [-1, 1]: hashed knots every ``period_s``, cosine-blended so it never jumps."""
    x = t_s / period_s
    i = math.floor(x)
    w = (1.0 - math.cos(math.pi * (x - i))) / 2.0
    a = signed_noise(*key, i)
    return a + (signed_noise(*key, i + 1) - a) * w


def load_kind(load_name: str) -> LoadKind:
    """The kind of a load from its stable name, e.g. ``hvac:zone-1`` -> ``hvac``."""
    kind = load_name.split(":", 1)[0]
    if kind not in get_args(LoadKind):
        raise UnknownLoadError(f"no load kind in name {load_name!r}")
    return cast(LoadKind, kind)


def reactive_kvar(load_name: str, active_kw: float) -> float:
    """Lagging reactive power of a load at its kind's power factor."""
    return active_kw * math.tan(math.acos(POWER_FACTOR[load_kind(load_name)]))


def require_aware(ts: datetime) -> None:
    """Naive datetimes are ambiguous across facility time zones: refuse them."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")


def _hour_of_day(local: datetime) -> float:
    return local.hour + local.minute / 60.0 + local.second / 3600.0


def schedule_fraction(local: datetime) -> float:
    """Share of the building in use (0..1) at a local wall-clock time.

    Weekdays ramp up 06-08, are fully occupied 08-18 and ramp down 18-20; weekends follow the
    same shape at ``WEEKEND_OCCUPANCY``.
    """
    hour = _hour_of_day(local)
    if hour < 6.0 or hour >= 20.0:
        profile = 0.0
    elif hour < 8.0:
        profile = (hour - 6.0) / 2.0
    elif hour < 18.0:
        profile = 1.0
    else:
        profile = (20.0 - hour) / 2.0
    return profile * (WEEKEND_OCCUPANCY if local.weekday() >= 5 else 1.0)


def diurnal_shape(hour: float) -> float:
    """-1 at 05:00 and +1 at 15:00 local: a 10 h warming half-cosine, then 14 h of cooling."""
    if 5.0 <= hour < 15.0:
        return -math.cos(math.pi * (hour - 5.0) / 10.0)
    return math.cos(math.pi * ((hour - 15.0) % 24.0) / 14.0)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def _gap_c(temp_c: float, heat_c: float, cool_c: float) -> float:
    """Degrees outside the dead band [heat_c, cool_c]."""
    return max(0.0, temp_c - cool_c) + max(0.0, heat_c - temp_c)


@dataclass(frozen=True, slots=True)
class Climate:
    """Site weather parameters; fronts add ``weather_noise_c`` of multi-day variation."""

    annual_mean_c: float = 13.0
    seasonal_amplitude_c: float = 12.0
    diurnal_range_c: float = 9.0
    weather_noise_c: float = 3.0


@dataclass(slots=True)
class HvacZone:
    """An air-handling zone with heat-pump cooling and heating.

    Occupied, power follows the gap between outdoor temperature plus internal gains and the
    effective setpoints (setpoint + ``setpoint_offset_c``), plus ventilation fans. Unoccupied,
    the dead band widens by ``setback_c`` and fans mostly stop. A positive offset sheds cooling;
    in heating weather a negative offset sheds heating.
    """

    zone_id: str
    rated_kw: float
    cooling_setpoint_c: float = 24.0
    heating_setpoint_c: float = 20.0
    setpoint_offset_c: float = 0.0
    kw_per_deg_c: float | None = None  # None: reaches rated kW at a 16 degC gap
    fan_fraction: float = 0.12
    internal_gain_c: float = 4.0
    setback_c: float = 4.0
    unoccupied_factor: float = 0.5

    def __post_init__(self) -> None:
        if not self.rated_kw > 0:
            raise ValueError(f"zone {self.zone_id}: rated_kw must be positive")
        if not self.heating_setpoint_c < self.cooling_setpoint_c:
            raise ValueError(f"zone {self.zone_id}: heating setpoint must be below cooling")
        if self.kw_per_deg_c is not None and not self.kw_per_deg_c > 0:
            raise ValueError(f"zone {self.zone_id}: kw_per_deg_c must be positive")
        if not (0.0 <= self.fan_fraction <= 1.0 and 0.0 <= self.unoccupied_factor <= 1.0):
            raise ValueError(f"zone {self.zone_id}: fractions must be within 0..1")

    @classmethod
    def from_floor_area(
        cls, zone_id: str, *, floor_area_m2: float, kw_per_m2: float = HVAC_KW_PER_M2
    ) -> HvacZone:
        """A zone sized from conditioned floor area."""
        return cls(zone_id=zone_id, rated_kw=floor_area_m2 * kw_per_m2)

    @property
    def slope_kw_per_deg_c(self) -> float:
        if self.kw_per_deg_c is not None:
            return self.kw_per_deg_c
        return self.rated_kw * (1.0 - self.fan_fraction) / 16.0

    def power_kw(self, *, outdoor_temp_c: float, occupancy: float) -> float:
        """Electrical kW, within 0..rated_kw."""
        occ = _clamp(occupancy, 0.0, 1.0)
        cool = self.cooling_setpoint_c + self.setpoint_offset_c
        heat = self.heating_setpoint_c + self.setpoint_offset_c
        slope = self.slope_kw_per_deg_c
        felt = outdoor_temp_c + self.internal_gain_c
        occupied = self.fan_fraction * self.rated_kw + slope * _gap_c(felt, heat, cool)
        setback_gap = _gap_c(outdoor_temp_c, heat - self.setback_c, cool + self.setback_c)
        unoccupied = self.unoccupied_factor * slope * setback_gap
        return _clamp(occ * occupied + (1.0 - occ) * unoccupied, 0.0, self.rated_kw)


@dataclass(slots=True)
class LightingGroup:
    """A dimmable lighting circuit; the security/egress floor stays on and is not dimmed."""

    group_id: str
    rated_kw: float
    level_pct: float = 100.0
    floor_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not self.rated_kw > 0:
            raise ValueError(f"lighting {self.group_id}: rated_kw must be positive")
        if not 0.0 <= self.level_pct <= 100.0:
            raise ValueError(f"lighting {self.group_id}: level_pct must be within 0..100")
        if not 0.0 <= self.floor_fraction <= 1.0:
            raise ValueError(f"lighting {self.group_id}: floor_fraction must be within 0..1")

    def power_kw(self, *, occupancy: float) -> float:
        dimmable = (1.0 - self.floor_fraction) * _clamp(occupancy, 0.0, 1.0) * self.level_pct
        return self.rated_kw * (self.floor_fraction + dimmable / 100.0)


class BuildingModel:
    """One facility's loads at any instant, keyed by stable load names.

    Names: ``hvac:<zone_id>``, ``lighting:<group_id>``, ``plug``, ``process`` (refrigeration),
    ``base`` (servers, always on) and ``other:NN`` circuits broken out of the base load so
    that extra submeters have something of their own to measure.
    """

    def __init__(
        self,
        *,
        facility_id: str,
        timezone: str,
        seed: int,
        size_scale: float = 1.0,
        climate: Climate | None = None,
        zones: Sequence[HvacZone] | None = None,
        lighting_groups: Sequence[LightingGroup] | None = None,
        base_kw: float | None = None,
        process_kw: float | None = None,
        plug_peak_kw: float | None = None,
        other_circuits: int = 0,
        nominal_voltage_v: float = 480.0,
    ) -> None:
        if not size_scale > 0:
            raise ValueError("size_scale must be positive")
        if other_circuits < 0:
            raise ValueError("other_circuits must not be negative")
        self.facility_id = facility_id
        self.timezone = timezone
        self.seed = seed
        self.size_scale = size_scale
        self.climate = climate if climate is not None else Climate()
        self.nominal_voltage_v = nominal_voltage_v
        self._tz = ZoneInfo(timezone)
        if zones is None:
            zones = [
                HvacZone(f"zone-{i}", DEFAULT_ZONE_RATED_KW * size_scale)
                for i in range(1, DEFAULT_ZONES + 1)
            ]
        if lighting_groups is None:
            lighting_groups = [
                LightingGroup(f"floor-{i}", DEFAULT_FLOOR_LIGHTING_KW * size_scale)
                for i in range(1, DEFAULT_FLOORS + 1)
            ]
        self._zones = {z.zone_id: z for z in zones}
        self._groups = {g.group_id: g for g in lighting_groups}
        if len(self._zones) != len(zones) or len(self._groups) != len(lighting_groups):
            raise ValueError("zone ids and lighting group ids must be unique")
        base = DEFAULT_BASE_KW * size_scale if base_kw is None else base_kw
        self.process_kw = DEFAULT_PROCESS_KW * size_scale if process_kw is None else process_kw
        self.plug_peak_kw = (
            DEFAULT_PLUG_PEAK_KW * size_scale if plug_peak_kw is None else plug_peak_kw
        )
        self.other_circuits = other_circuits
        other_total = base * OTHER_SHARE_OF_BASE if other_circuits else 0.0
        self.base_kw = base - other_total
        self.other_kw = other_total / other_circuits if other_circuits else 0.0

    @property
    def zones(self) -> tuple[HvacZone, ...]:
        return tuple(self._zones.values())

    @property
    def lighting_groups(self) -> tuple[LightingGroup, ...]:
        return tuple(self._groups.values())

    @property
    def design_peak_kw(self) -> float:
        """Sum of nominal ratings: what contract demand is sized from."""
        return math.fsum(
            [
                *(z.rated_kw for z in self._zones.values()),
                *(g.rated_kw for g in self._groups.values()),
                self.plug_peak_kw,
                self.process_kw,
                self.base_kw,
                self.other_kw * self.other_circuits,
            ]
        )

    def load_names(self) -> tuple[str, ...]:
        return (
            *(f"hvac:{z}" for z in self._zones),
            *(f"lighting:{g}" for g in self._groups),
            "plug",
            "process",
            "base",
            *(f"other:{i:02d}" for i in range(1, self.other_circuits + 1)),
        )

    def set_hvac_offset(self, zone_id: str, offset_c: float) -> None:
        if not abs(offset_c) <= MAX_SETPOINT_OFFSET_C:
            raise ValueError(f"setpoint offset must be within +-{MAX_SETPOINT_OFFSET_C} degC")
        self._zone(zone_id).setpoint_offset_c = offset_c

    def set_lighting_level(self, group_id: str, level_pct: float) -> None:
        if not 0.0 <= level_pct <= 100.0:
            raise ValueError("lighting level must be within 0..100 %")
        self._group(group_id).level_pct = level_pct

    def _zone(self, zone_id: str) -> HvacZone:
        try:
            return self._zones[zone_id]
        except KeyError:
            raise UnknownLoadError(f"{self.facility_id} has no HVAC zone {zone_id!r}") from None

    def _group(self, group_id: str) -> LightingGroup:
        try:
            return self._groups[group_id]
        except KeyError:
            raise UnknownLoadError(
                f"{self.facility_id} has no lighting group {group_id!r}"
            ) from None

    def _local(self, ts: datetime) -> datetime:
        require_aware(ts)
        return ts.astimezone(self._tz)

    def occupancy_fraction(self, ts: datetime) -> float:
        return schedule_fraction(self._local(ts))

    def outdoor_temp_c(self, ts: datetime) -> float:
        """Seasonal and diurnal cycles in local time plus smooth fronts and hourly wobble."""
        local = self._local(ts)
        c = self.climate
        t_s = ts.timestamp()
        hour = _hour_of_day(local)
        day = local.timetuple().tm_yday + hour / 24.0
        seasonal = c.seasonal_amplitude_c * math.cos(2 * math.pi * (day - SEASON_PEAK_DAY) / 365.25)
        diurnal = c.diurnal_range_c / 2.0 * diurnal_shape(hour)
        key = (self.seed, self.facility_id, "weather")
        fronts = c.weather_noise_c * smooth_noise(t_s, period_s=86_400.0, key=(*key, "day"))
        wobble = 0.5 * smooth_noise(t_s, period_s=3_600.0, key=(*key, "hour"))
        return c.annual_mean_c + seasonal + diurnal + fronts + wobble

    def loads_kw(self, ts: datetime) -> dict[str, float]:
        """Each load's active power (kW) at ``ts``, keyed by load name."""
        occ = self.occupancy_fraction(ts)
        temp_c = self.outdoor_temp_c(ts)
        t = int(ts.timestamp())

        def noise(load: str) -> float:
            return signed_noise(self.seed, self.facility_id, load, t)

        loads: dict[str, float] = {}
        for z in self._zones.values():
            name = f"hvac:{z.zone_id}"
            hvac_kw = z.power_kw(outdoor_temp_c=temp_c, occupancy=occ) * (1 + 0.03 * noise(name))
            loads[name] = min(hvac_kw, z.rated_kw)
        for g in self._groups.values():
            loads[f"lighting:{g.group_id}"] = g.power_kw(occupancy=occ)
        plug_profile = PLUG_IDLE_FRACTION + (1.0 - PLUG_IDLE_FRACTION) * occ
        loads["plug"] = self.plug_peak_kw * plug_profile * (1 + 0.04 * noise("plug"))
        condenser = 1.0 + 0.01 * max(0.0, temp_c - 20.0)  # refrigeration works harder when hot
        loads["process"] = self.process_kw * condenser * (1 + 0.05 * noise("process"))
        loads["base"] = self.base_kw * (1 + 0.02 * noise("base"))
        for i in range(1, self.other_circuits + 1):
            name = f"other:{i:02d}"
            loads[name] = self.other_kw * (1 + 0.03 * noise(name))
        return loads

    def voltage_v(self, ts: datetime, *, point: str) -> float:
        """Nominal within +-1 %: a slow site-wide drift plus per-meter jitter."""
        t_s = ts.timestamp()
        drift = smooth_noise(t_s, period_s=900.0, key=(self.seed, self.facility_id, "voltage"))
        jitter = signed_noise(self.seed, self.facility_id, point, "voltage", int(t_s))
        return self.nominal_voltage_v * (1.0 + 0.007 * drift + 0.003 * jitter)

    def frequency_hz(self, ts: datetime, *, point: str) -> float:
        """60 Hz within +-0.02: grid-wide drift shared by all sites of a seed, plus jitter."""
        t_s = ts.timestamp()
        grid = smooth_noise(t_s, period_s=60.0, key=(self.seed, "grid-frequency"))
        jitter = signed_noise(self.seed, self.facility_id, point, "frequency", int(t_s))
        return 60.0 + 0.016 * grid + 0.004 * jitter
