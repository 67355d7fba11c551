"""The table ``python -m bench.all`` prints: each benchmark's JSON turned into rows, one per
ratio (SEMS's path over its baseline, measured in the same run) or target figure, each with
the target issue 15 and docs/performance.md give, where there is one, and its verdict.

Every ratio is worked out the way the benchmark's own report does (ingest, kafka, influx and
forecast: a ratio of medians; the API: the median of each run's own ratio; start-up and DR:
the busy p99 over the idle one's), so that the table and the benchmark's log agree. No I/O
here: ``bench/all.py`` runs the benchmarks and hands their outcomes in.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from bench.api_report import SCALING_CORES

Op = Literal[">=", "<", "<="]
Unit = Literal["x", "ms", "s", ""]
Verdict = Literal["met", "NOT met", "not judged", "failed", ""]

# The consumers', writers' and phases' names as the benchmarks write them (bench/ingest.py,
# bench/kafka.py, bench/influx.py, bench/forecast.py; tests/unit/test_bench_all.py checks
# them against the modules, which this one does not import: they pull in the whole stack).
MOSQUITTO_SUB = "mosquitto_sub"
BARE_AIOMQTT = "bare aiomqtt"
SEMS_LOCAL = "SEMS local runtime"
KAFKA_E2E = "SEMS kafka: "
KAFKA_INGEST_1 = "SEMS kafka: ingest + 1 worker"
KAFKA_WORKERS = "SEMS kafka worker x"
KCAT = "kcat (topic -> /dev/null)"
INFLUX_SEMS = "SEMS InfluxTimeSeries.write"
INFLUX_RAW = ("raw bulk POST, 1 in flight", "raw bulk POST, 4 in flight")
FORECAST_BASELINE = "seasonal_naive"
FORECAST_MODELS = ("fourier_ols", "mstl_ets")
DR_IDLE = "baseline (nothing running)"
DR_NOW = "(now)"

TARGET_MISS_EXIT = {"api": 1}
"""Benchmarks whose exit status says a target was missed (bench/api.py exits 1): with their
JSON written and a target of theirs NOT met in the table, that status is not a failure."""


@dataclass(frozen=True, slots=True)
class Target:
    op: Op
    bound: float
    judged: bool = True
    note: str = ""
    """Why a target is reported and not judged."""

    def met(self, value: float | None) -> bool:
        if value is None or value != value:  # no figure (NaN is null in the JSON)
            return False
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<":
            return value < self.bound
        return value <= self.bound


@dataclass(frozen=True, slots=True)
class Row:
    bench: str
    compared: str
    value: float | None = None
    unit: Unit = "x"
    target: Target | None = None
    failed: str = ""
    """Set on the one row of a benchmark that failed: what happened and where its log is."""

    @property
    def verdict(self) -> Verdict:
        if self.failed:
            return "failed"
        if self.target is None:
            return ""
        if not self.target.judged:
            return "not judged"
        return "met" if self.target.met(self.value) else "NOT met"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One benchmark's subprocess: how it ended, and where its JSON and log are."""

    name: str
    returncode: int
    json_path: Path
    log_path: Path
    elapsed_s: float
    note: str = ""
    """What the runner saw beside the exit status: a timeout, a missing module."""


def _ratio(bench: str, compared: str, num: float | None, den: float | None,
           target: Target | None = None) -> Row:
    return Row(bench, compared, num / den if num is not None and den else None, "x", target)


def _median(values: Iterable[float | None]) -> float | None:
    """``None`` when a run has no figure (NaN, written as null: no request was answered)."""
    given = list(values)
    found = [v for v in given if v is not None and v == v]
    return float(statistics.median(found)) if found and len(found) == len(given) else None


def _consumer_medians(data: Mapping[str, Any]) -> dict[str, float]:
    """bench/report.py's ``Results.to_json``: each consumer's median readings/s."""
    return {s["consumer"]: s["median_per_s"] for s in data["summary"]}


def ingest_rows(data: Mapping[str, Any]) -> list[Row]:
    m = _consumer_medians(data)
    return [_ratio("ingest", f"{SEMS_LOCAL} / {BARE_AIOMQTT}", m[SEMS_LOCAL], m[BARE_AIOMQTT],
                   Target(">=", 1.0)),
            _ratio("ingest", f"{SEMS_LOCAL} / {MOSQUITTO_SUB}", m[SEMS_LOCAL], m[MOSQUITTO_SUB])]


def kafka_rows(data: Mapping[str, Any]) -> list[Row]:
    m = _consumer_medians(data)
    rows = [_ratio("kafka", f"{name} / {SEMS_LOCAL}", rate, m[SEMS_LOCAL],
                   Target(">=", 1.0) if name == KAFKA_INGEST_1 else None)
            for name, rate in m.items() if name.startswith(KAFKA_E2E)]
    rows += [_ratio("kafka", f"{name} / {KCAT}", rate, m[KCAT])
             for name, rate in m.items() if name.startswith(KAFKA_WORKERS)]
    return rows


def influx_rows(data: Mapping[str, Any]) -> list[Row]:
    m = data["median_points_per_s"]
    return [_ratio("influx", f"{INFLUX_SEMS} / {raw}", m[INFLUX_SEMS], m[raw])
            for raw in INFLUX_RAW]


def api_rows(data: Mapping[str, Any]) -> list[Row]:
    runs: list[dict[str, Any]] = data["runs"]
    cores = int(data["machine"]["nproc"])

    def ratio(key: str) -> float | None:
        return _median(r["ratios"][key] for r in runs)

    def over(part: str, key: str) -> float | None:
        return _median(r[part][key] for r in runs)

    def errors(part: str) -> float:
        return float(sum(r[part]["errors"] for r in runs))

    scaling = Target(">=", 1.7, judged=cores >= SCALING_CORES,
                     note="" if cores >= SCALING_CORES else
                     f"{cores} cores; judged on {SCALING_CORES} or more, wrk takes one")
    rate = over("cached", "achieved_per_s") or 0.0
    return [
        Row("api", "cached /current / /healthz, production", ratio("current / healthz"),
            "x", Target(">=", 0.6)),
        Row("api", "/api/facilities / /healthz, production", ratio("facilities / healthz"),
            "x", Target(">=", 0.5)),
        Row("api", "cached /current / /healthz, embedded",
            ratio("embedded current / healthz"), "x", Target(">=", 0.6)),
        Row("api", "/api/facilities / /healthz, embedded",
            ratio("embedded facilities / healthz"), "x", Target(">=", 0.5)),
        Row("api", "cached / uncached ceiling (wrk on /current)",
            ratio("cached / uncached ceiling"), "x", Target(">=", 4.0)),
        Row("api", "2 API processes / 1 (wrk on cached /current)", ratio("2 / 1 processes"),
            "x", scaling),
        Row("api", f"/current with Redis, open loop ({rate:.0f} req/s achieved): p95",
            over("cached", "p95_ms"), "ms", Target("<", 50.0)),
        Row("api", "/current with Redis, open loop: errors", errors("cached"), "",
            Target("<=", 0)),
        Row("api", "/current during start-up (first seconds after the port accepts): p99",
            over("startup", "p99_ms"), "ms", Target("<", 250.0)),
        Row("api", "/current during start-up: errors", errors("startup"), "", Target("<=", 0)),
    ]


def forecast_rows(data: Mapping[str, Any]) -> list[Row]:
    processes = int(data["processes"])
    where = "1 process" if processes == 1 else f"{processes} processes"
    rows: list[Row] = []
    for size in data["sizes"]:
        n, median_s = int(size["facilities"]), size["median_s"]
        for model in FORECAST_MODELS:
            rows.append(_ratio("forecast", f"{model} / {FORECAST_BASELINE} cycle, {n:,} "
                               f"facilities, {where}", median_s[model],
                               median_s[FORECAST_BASELINE]))
        if n == 100:
            rows.append(Row("forecast", f"fourier_ols cycle of 100 facilities, {where}",
                            median_s["fourier_ols"], "s", Target("<", 30.0)))
    return rows


def startup_rows(data: Mapping[str, Any]) -> list[Row]:
    return [Row("startup", "/current p99 while sems run starts / the idle process's",
                data["ratio"]["p99_ms"]),
            Row("startup", "/current p99 while sems run starts, backfills and chooses models",
                data["busy"]["p99_ms"], "ms", Target("<", 250.0))]


def dr_stall_rows(data: Mapping[str, Any]) -> list[Row]:
    phases: dict[str, list[dict[str, float]]] = data["phases"]
    idle_p99 = _median(r["lag_p99_ms"] for r in phases[DR_IDLE])
    rows: list[Row] = []
    for name, runs in phases.items():
        if name == DR_IDLE:
            continue
        p99 = _median(r["lag_p99_ms"] for r in runs)
        rows.append(_ratio("dr-stall", f"{name}: loop lag p99 / the idle loop's", p99,
                           idle_p99))
        if name.endswith(DR_NOW):
            rows.append(Row("dr-stall", f"{name}: loop lag p99 (the /current target)", p99,
                            "ms", Target("<", 250.0)))
    return rows


ROWS: dict[str, Callable[[Mapping[str, Any]], list[Row]]] = {
    "ingest": ingest_rows, "kafka": kafka_rows, "influx": influx_rows, "api": api_rows,
    "forecast": forecast_rows, "startup": startup_rows, "dr-stall": dr_stall_rows,
}


def outcome_rows(outcome: Outcome) -> list[Row]:
    """The benchmark's rows; one ``failed`` row more (or instead) when it exited non-zero,
    wrote no readable JSON or the JSON lacks what its rows need."""
    def failed(what: str) -> Row:
        note = f"; {outcome.note}" if outcome.note else ""
        return Row(outcome.name, "", failed=f"{what}{note}; log: {outcome.log_path}")

    try:
        data = orjson.loads(outcome.json_path.read_bytes())
        rows = ROWS[outcome.name](data)
    except OSError:
        return [failed(f"exit {outcome.returncode}, wrote no {outcome.json_path.name}")]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        return [failed(f"exit {outcome.returncode}, {outcome.json_path.name} unreadable "
                       f"({type(e).__name__}: {e})")]
    explained = (outcome.returncode == TARGET_MISS_EXIT.get(outcome.name)
                 and any(r.verdict == "NOT met" for r in rows))
    if outcome.returncode != 0 and not explained:
        rows.append(failed(f"exit {outcome.returncode}"))
    return rows


@dataclass
class Summary:
    commit: str
    date: str
    folder: Path
    quick: bool
    outcomes: list[Outcome] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def exit_status(self) -> int:
        return 1 if any(r.verdict in ("failed", "NOT met") for r in self.rows) else 0

    def to_json(self) -> bytes:
        return orjson.dumps({
            "commit": self.commit, "date": self.date, "folder": str(self.folder),
            "quick": self.quick, "exit_status": self.exit_status(),
            "benchmarks": [{**asdict(o), "json_path": str(o.json_path),
                            "log_path": str(o.log_path)} for o in self.outcomes],
            "rows": [{**asdict(r), "verdict": r.verdict} for r in self.rows],
        }, option=orjson.OPT_INDENT_2)


def summarize(outcomes: Sequence[Outcome], *, commit: str, date: str, folder: Path,
              quick: bool) -> Summary:
    rows = [row for o in outcomes for row in outcome_rows(o)]
    return Summary(commit, date, folder, quick, list(outcomes), rows)


def _number(value: float, unit: Unit, target: Target | None) -> str:
    """A ratio with two decimals under 10, one under 100, none above (ms and s: one), more
    where rounding would flip the verdict: a 0.9996 shown as 1.00 beside "≥ 1.0" and
    "NOT met" would read as a contradiction."""
    digits = {"ms": 1, "s": 1, "": 0}.get(unit, 2 if value < 10 else 1 if value < 100 else 0)
    while target is not None and digits < 6 and \
            target.met(round(value, digits)) != target.met(value):
        digits += 1
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit in ("ms", "s") else text


def _bound(target: Target | None, unit: Unit) -> str:
    if target is None:
        return ""
    if target.op == "<=" and target.bound == 0:
        return "none"
    sign = {">=": "≥", "<": "<", "<=": "≤"}[target.op]
    if unit == "x":
        return f"{sign} {target.bound:.1f}"
    return f"{sign} {target.bound:g}{' ' + unit if unit else ''}"


def markdown(summary: Summary) -> str:
    kind = ", `--quick` (smoke sizes: not for the record)" if summary.quick else ""
    lines = [f"Benchmarks on {summary.commit}, {summary.date}{kind}; run folder "
             f"`{summary.folder}`", "",
             "| benchmark | compared | median | target | |", "|---|---|---:|---|---|"]
    for r in summary.rows:
        if r.failed:
            lines.append(f"| {r.bench} | {r.failed} | | | **failed** |")
            continue
        value = "—" if r.value is None else _number(r.value, r.unit, r.target)
        verdict = {"NOT met": "**NOT met**", "not judged": "not judged"}.get(r.verdict,
                                                                             r.verdict)
        if r.target is not None and r.target.note:
            verdict += f" ({r.target.note})"
        lines.append(f"| {r.bench} | {r.compared} | {value} | {_bound(r.target, r.unit)} "
                     f"| {verdict} |")
    return "\n".join(lines) + "\n"
