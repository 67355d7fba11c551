"""The summary of ``make bench-all`` (bench/all_summary.py) from recorded benchmark JSON.

The fixtures in tests/fixtures/bench_all/ are shaped as each benchmark writes its file (the
ingest and kafka ones by bench/report.py's ``Results.to_json``, the API's from
``bench.api.Run``), with round numbers so that every ratio below is worked out by hand."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import all_summary as s
from bench.all_summary import Outcome, Row, Summary, Target, markdown, outcome_rows, summarize

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench_all"
NAMES = ("ingest", "kafka", "influx", "api", "forecast", "startup", "dr-stall")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    return data


def outcome(tmp: Path, name: str, data: dict[str, Any] | None, *, returncode: int = 0,
            note: str = "") -> Outcome:
    """A finished benchmark whose JSON is ``data`` (none written when ``None``)."""
    json_path = tmp / f"{name}.json"
    if data is not None:
        json_path.write_bytes(orjson.dumps(data))
    return Outcome(name, returncode, json_path, tmp / f"{name}.log", 12.0, note)


def table(rows: list[Row]) -> list[tuple[str, float | None, str]]:
    return [(r.compared, r.value, r.verdict) for r in rows]


EXPECTED: dict[str, list[tuple[str, float | None, str]]] = {
    # Medians (readings/s): mosquitto_sub 60,000, bare aiomqtt 8,000, SEMS 6,000.
    "ingest": [("SEMS local runtime / bare aiomqtt", 0.75, "NOT met"),      # 6,000 / 8,000
               ("SEMS local runtime / mosquitto_sub", 0.1, "")],            # 6,000 / 60,000
    # One run each: local 10,000; one process 3,000; ingest + 1 worker 3,500; kcat 1,000,000;
    # worker x1 10,000. Only ingest + 1 worker has a target (>= 1.0 x local).
    "kafka": [("SEMS kafka: one process (sems run) / SEMS local runtime", 0.3, ""),
              ("SEMS kafka: ingest + 1 worker / SEMS local runtime", 0.35, "NOT met"),
              ("SEMS kafka worker x1 (topic -> store) / kcat (topic -> /dev/null)", 0.01, "")],
    # Medians (points/s): SEMS 100,000; raw 1 in flight 125,000; raw 4 in flight 200,000.
    "influx": [("SEMS InfluxTimeSeries.write / raw bulk POST, 1 in flight", 0.8, ""),
               ("SEMS InfluxTimeSeries.write / raw bulk POST, 4 in flight", 0.5, "")],
    # The median of each run's own ratio over 3 runs: current/healthz 1.9, 2.0, 2.1;
    # facilities 0.9, 0.7, 0.8; embedded 1.3, 1.1, 0.9 and 1.2, 0.8, 0.9; ceiling 15, 13, 21;
    # 2/1 processes 1.75, 1.3, 1.6 (2 cores: not judged); p95 21.0, 303.9, 37.3 ms; start-up
    # p99 130, 75, 253 ms; no errors in the cached or the start-up loops (7,000 uncached).
    "api": [("cached /current / /healthz, production", 2.0, "met"),
            ("/api/facilities / /healthz, production", 0.8, "met"),
            ("cached /current / /healthz, embedded", 1.1, "met"),
            ("/api/facilities / /healthz, embedded", 0.9, "met"),
            ("cached / uncached ceiling (wrk on /current)", 15.0, "met"),
            ("2 API processes / 1 (wrk on cached /current)", 1.6, "not judged"),
            ("/current with Redis, open loop (499 req/s achieved): p95", 37.3, "met"),
            ("/current with Redis, open loop: errors", 0.0, "met"),
            ("/current during start-up (first seconds after the port accepts): p99", 130.0,
             "met"),
            ("/current during start-up: errors", 0.0, "met")],
    # Median seconds: 100 facilities fourier_ols 2.5, mstl_ets 9.0, seasonal naive 0.5;
    # 1,000: 28, 98, 7. Only the 100-facility cycle has a target (< 30 s).
    "forecast": [("fourier_ols / seasonal_naive cycle, 100 facilities, 1 process", 5.0, ""),
                 ("mstl_ets / seasonal_naive cycle, 100 facilities, 1 process", 18.0, ""),
                 ("fourier_ols cycle of 100 facilities, 1 process", 2.5, "met"),
                 ("fourier_ols / seasonal_naive cycle, 1,000 facilities, 1 process", 4.0, ""),
                 ("mstl_ets / seasonal_naive cycle, 1,000 facilities, 1 process", 14.0, "")],
    # Busy p99 97 ms against the idle process's 7.6 ms: 12.76.
    "startup": [("/current p99 while sems run starts / the idle process's", 97 / 7.6, ""),
                ("/current p99 while sems run starts, backfills and chooses models", 97.0,
                 "met")],
    # Medians of two runs: idle p99 0.3 ms; campus inline 471 (1,570 x), on a thread 4.05
    # (13.5 x, under 250 ms), reports on a thread 255 (850 x, not under 250 ms).
    "dr-stall": [("campus plans inline (before): loop lag p99 / the idle loop's", 1570.0, ""),
                 ("campus plans on a thread (now): loop lag p99 / the idle loop's", 13.5, ""),
                 ("campus plans on a thread (now): loop lag p99 (the /current target)", 4.05,
                  "met"),
                 ("reports on a thread (now): loop lag p99 / the idle loop's", 850.0, ""),
                 ("reports on a thread (now): loop lag p99 (the /current target)", 255.0,
                  "NOT met")],
}


@pytest.mark.parametrize("name", NAMES)
def test_rows_of_each_benchmark(name: str) -> None:
    rows = s.ROWS[name](load(name))
    assert [(c, verdict) for c, _, verdict in table(rows)] == [
        (c, verdict) for c, _, verdict in EXPECTED[name]]
    assert [r.value for r in rows] == pytest.approx([v for _, v, _ in EXPECTED[name]])


def set_median(data: dict[str, Any], consumer: str, per_s: float) -> None:
    for item in data["summary"]:
        if item["consumer"] == consumer:
            item["median_per_s"] = per_s


def api_runs(key: str, values: list[float], part: str = "ratios") -> Callable[[dict[str, Any]],
                                                                                None]:
    def change(data: dict[str, Any]) -> None:
        for run, v in zip(data["runs"], values, strict=True):
            if part == "ratios":
                run["ratios"][key] = v
            else:
                run[part][key] = v
    return change


def on_cores(n: int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["machine"]["nproc"] = str(n)
        api_runs("2 / 1 processes", [1.8, 1.6, 1.75])(data)  # median 1.75 unless set after
    return change


def both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for c in changes:
            c(data)
    return change


@pytest.mark.parametrize(("name", "change", "compared", "verdict"), [
    # SEMS exactly as fast as bare aiomqtt: 1.0 is ">= 1.0", met; a reading a second slower
    # is not.
    ("ingest", lambda d: set_median(d, "bare aiomqtt", 6_000), "SEMS local runtime / bare "
     "aiomqtt", "met"),
    ("ingest", lambda d: set_median(d, "bare aiomqtt", 6_001), "SEMS local runtime / bare "
     "aiomqtt", "NOT met"),
    ("kafka", lambda d: set_median(d, "SEMS kafka: ingest + 1 worker", 10_000),
     "SEMS kafka: ingest + 1 worker / SEMS local runtime", "met"),
    # /api/facilities at exactly half of /healthz (median of 0.4, 0.5, 0.6) is met.
    ("api", api_runs("facilities / healthz", [0.4, 0.5, 0.6]),
     "/api/facilities / /healthz, production", "met"),
    ("api", api_runs("facilities / healthz", [0.4, 0.499, 0.6]),
     "/api/facilities / /healthz, production", "NOT met"),
    ("api", api_runs("cached / uncached ceiling", [3.0, 4.0, 5.0]),
     "cached / uncached ceiling (wrk on /current)", "met"),
    # p95 exactly 50 ms is not "< 50 ms".
    ("api", api_runs("p95_ms", [10.0, 50.0, 60.0], part="cached"),
     "/current with Redis, open loop (499 req/s achieved): p95", "NOT met"),
    ("api", api_runs("p95_ms", [10.0, 49.9, 60.0], part="cached"),
     "/current with Redis, open loop (499 req/s achieved): p95", "met"),
    # No p95 at all (no request answered: NaN, which the JSON writes as null) is not met.
    ("api", api_runs("p95_ms", [10.0, None, None], part="cached"),  # type: ignore[list-item]
     "/current with Redis, open loop (499 req/s achieved): p95", "NOT met"),
    ("api", api_runs("errors", [0, 1, 0], part="startup"),
     "/current during start-up: errors", "NOT met"),
    ("api", api_runs("p99_ms", [250.0, 250.0, 10.0], part="startup"),
     "/current during start-up (first seconds after the port accepts): p99", "NOT met"),
    # Two processes are judged on 4 cores: median 1.75 met, 1.7 exactly met, 1.69 not.
    ("api", on_cores(4), "2 API processes / 1 (wrk on cached /current)", "met"),
    ("api", both(on_cores(4), api_runs("2 / 1 processes", [1.7, 1.7, 1.8])),
     "2 API processes / 1 (wrk on cached /current)", "met"),
    ("api", both(on_cores(4), api_runs("2 / 1 processes", [1.69, 1.69, 1.8])),
     "2 API processes / 1 (wrk on cached /current)", "NOT met"),
    ("api", on_cores(3), "2 API processes / 1 (wrk on cached /current)", "not judged"),
    ("forecast", lambda d: d["sizes"][0]["median_s"].update(fourier_ols=30.0),
     "fourier_ols cycle of 100 facilities, 1 process", "NOT met"),
    ("startup", lambda d: d["busy"].update(p99_ms=250.0),
     "/current p99 while sems run starts, backfills and chooses models", "NOT met"),
    ("startup", lambda d: d["busy"].update(p99_ms=249.99),
     "/current p99 while sems run starts, backfills and chooses models", "met"),
    ("dr-stall", lambda d: d["phases"]["reports on a thread (now)"][1].update(lag_p99_ms=259.9),
     "reports on a thread (now): loop lag p99 (the /current target)", "met"),  # 249.95
])
def test_verdicts_at_the_boundaries(name: str, change: Callable[[dict[str, Any]], None],
                                    compared: str, verdict: str) -> None:
    data = copy.deepcopy(load(name))
    change(data)
    found = {r.compared: r.verdict for r in s.ROWS[name](data)}
    assert found[compared] == verdict


def test_a_failed_benchmark_is_a_row_with_its_log_and_the_others_still_count(
        tmp_path: Path) -> None:
    outcomes = [outcome(tmp_path, "kafka", None, returncode=1),
                outcome(tmp_path, "forecast", load("forecast"))]
    summary = summarize(outcomes, commit="f5f35ed", date="2026-12-03 13:00 UTC",
                        folder=tmp_path, quick=True)
    assert [(r.bench, r.verdict) for r in summary.rows][:2] == [("kafka", "failed"),
                                                                 ("forecast", "")]
    assert summary.rows[0].failed == f"exit 1, wrote no kafka.json; log: {tmp_path / 'kafka.log'}"
    assert len(summary.rows) == 1 + len(EXPECTED["forecast"])
    assert summary.exit_status() == 1
    md = markdown(summary)
    assert f"| kafka | exit 1, wrote no kafka.json; log: {tmp_path / 'kafka.log'} |" in md
    assert "| **failed** |" in md


def test_every_target_met_exits_0_and_the_table_reads_as_markdown(tmp_path: Path) -> None:
    summary = summarize([outcome(tmp_path, "forecast", load("forecast")),
                         outcome(tmp_path, "api", load("api"))],
                        commit="f5f35ed+dirty", date="2026-12-03 13:00 UTC",
                        folder=Path(".run/bench-all/x"), quick=False)
    assert summary.exit_status() == 0  # "not judged" (2 processes on 2 cores) does not count
    lines = markdown(summary).splitlines()
    assert lines[0] == ("Benchmarks on f5f35ed+dirty, 2026-12-03 13:00 UTC; run folder "
                        "`.run/bench-all/x`")
    assert lines[2:4] == ["| benchmark | compared | median | target | |",
                          "|---|---|---:|---|---|"]
    assert lines[4] == ("| forecast | fourier_ols / seasonal_naive cycle, 100 facilities, "
                        "1 process | 5.00 |  |  |")
    assert lines[6] == ("| forecast | fourier_ols cycle of 100 facilities, 1 process | 2.5 s "
                        "| < 30 s | met |")
    assert "| api | cached / uncached ceiling (wrk on /current) | 15.0 | ≥ 4.0 | met |" in lines
    assert ("| api | 2 API processes / 1 (wrk on cached /current) | 1.60 | ≥ 1.7 | not judged "
            "(2 cores; judged on 4 or more, wrk takes one) |") in lines
    assert len(lines) == 4 + len(EXPECTED["forecast"]) + len(EXPECTED["api"])
    written = orjson.loads(summary.to_json())
    assert written["exit_status"] == 0
    assert [r["verdict"] for r in written["rows"]][-2:] == ["met", "met"]


@pytest.mark.parametrize(("returncode", "ceiling", "failed"), [
    # bench/api.py exits 1 on a missed target: with one NOT met in the table, no failure...
    (1, 3.0, False),
    # ...but exit 1 with every target met is one, and so is any other status.
    (1, 15.0, True),
    (2, 3.0, True),
])
def test_api_exit_1_is_a_missed_target(tmp_path: Path, returncode: int, ceiling: float,
                                       failed: bool) -> None:
    data = load("api")
    api_runs("cached / uncached ceiling", [ceiling] * 3)(data)
    rows = outcome_rows(outcome(tmp_path, "api", data, returncode=returncode))
    assert (rows[-1].verdict == "failed") is failed
    assert len(rows) == len(EXPECTED["api"]) + failed


def test_ingest_exit_1_with_results_is_a_failure(tmp_path: Path) -> None:
    """bench/ingest.py exits 1 when a reading was lost or stored twice: its ratios still
    show, and a failed row says so."""
    rows = outcome_rows(outcome(tmp_path, "ingest", load("ingest"), returncode=1,
                                note="stopped after 60 s (--timeout-s)"))
    assert [r.verdict for r in rows] == ["NOT met", "", "failed"]
    assert rows[-1].failed == (f"exit 1; stopped after 60 s (--timeout-s); log: "
                               f"{tmp_path / 'ingest.log'}")


def test_json_missing_a_figure_is_a_failure(tmp_path: Path) -> None:
    data = load("influx")
    del data["median_points_per_s"]
    rows = outcome_rows(outcome(tmp_path, "influx", data))
    assert [r.verdict for r in rows] == ["failed"]
    assert rows[0].failed.startswith("exit 0, influx.json unreadable (KeyError: ")


@pytest.mark.parametrize(("value", "target", "shown"), [
    (0.9996, Target(">=", 1.0), "0.9996"),  # not "1.00" beside NOT met
    (0.994, Target(">=", 1.0), "0.99"),
    (49.96, Target("<", 50.0), "49.96 ms"),
    (1570.0, None, "1,570"),
])
def test_numbers_never_round_across_their_target(value: float, target: Target | None,
                                                 shown: str) -> None:
    unit: s.Unit = "ms" if shown.endswith("ms") else "x"
    row = Row("x", "y", value, unit, target)
    line = markdown(Summary("c", "d", Path("f"), False, rows=[row])).splitlines()[-1]
    assert line.split(" | ")[2] == shown


def test_names_are_the_benchmarks_own() -> None:
    """The summary does not import the benchmarks; their names must not drift apart."""
    from bench import all as runner
    from bench import forecast, influx, ingest, kafka

    assert set(ingest.KINDS) == {s.MOSQUITTO_SUB, s.BARE_AIOMQTT, s.SEMS_LOCAL}
    assert (kafka.LOCAL, kafka.KCAT, kafka.e2e_name(1)) == (s.SEMS_LOCAL, s.KCAT,
                                                            s.KAFKA_INGEST_1)
    assert kafka.e2e_name(0).startswith(s.KAFKA_E2E)
    assert kafka.workers_name(2).startswith(s.KAFKA_WORKERS)
    assert (influx.SEMS, influx.RAW_1, influx.RAW_4) == (s.INFLUX_SEMS, *s.INFLUX_RAW)
    assert (forecast.BASELINE, *s.FORECAST_MODELS) == (forecast.MODELS[2], *forecast.MODELS[:2])
    assert runner.NAMES == NAMES == tuple(s.ROWS)
