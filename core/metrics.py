"""Prometheus metrics, one set per application instance (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ITEM_LOOPS = ("dr_event", "bms_command", "forecast", "forecast_choice", "rollup_idle")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.readings_received = Counter(
            "sems_readings_received_total", "Raw messages received from meters", registry=r
        )
        self.readings_accepted = Counter(
            "sems_readings_accepted_total", "Readings folded into rollups", registry=r
        )
        self.readings_rejected = Counter(
            "sems_readings_rejected_total",
            "Messages sent to the dead-letter stream, by reason",
            ["reason"],
            registry=r,
        )
        self.readings_duplicate = Counter(
            "sems_readings_duplicate_total",
            "Readings dropped because the same meter and timestamp were already counted",
            registry=r,
        )
        self.rollups_emitted = Counter(
            "sems_rollups_emitted_total", "Final rollups emitted", ["window", "scope"], registry=r
        )
        self.watermark = Gauge(
            "sems_facility_watermark_timestamp_seconds",
            "Event time up to which the facility's windows are closed",
            ["facility_id"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "sems_rollup_batch_duration_seconds",
            "Time to fold and store one batch of readings",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.store_write_duration = Histogram(
            "sems_store_write_duration_seconds",
            "Duration of a store write transaction",
            ["store"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.store_rows_written = Counter(
            "sems_store_rows_written_total", "Rows written", ["store", "table"], registry=r
        )
        self.store_rows_expired = Counter(
            "sems_store_rows_expired_total",
            "Rows not written because they are already past the store's retention",
            ["store", "table"], registry=r,
        )
        self.store_errors = Counter(
            "sems_store_errors_total", "Failed store operations", ["store", "operation"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "sems_mqtt_connected", "1 while the MQTT subscriber is connected", registry=r
        )
        self.mqtt_connects = Counter(
            "sems_mqtt_connects_total", "Successful MQTT (re)connections", registry=r
        )
        self.channel_depth = Gauge(
            "sems_channel_depth", "Events waiting in an in-process channel", ["channel"],
            registry=r,
        )
        self.meter_last_reading = Gauge(
            "sems_meter_last_reading_timestamp_seconds",
            "Event time of the newest stored reading of each meter",
            ["facility_id", "meter_id"], registry=r,
        )
        self.kafka_lag = Gauge(
            "sems_kafka_consumer_lag_messages",
            "Messages in a partition past the worker group's committed offset",
            ["topic", "partition"], registry=r,
        )
        self.cache_requests = Counter(
            "sems_cache_requests_total", "Cache lookups by result (hit, miss, error)",
            ["cache", "result"], registry=r,
        )
        self.api_requests = Counter(
            "sems_api_requests_total", "API requests", ["route", "method", "status"], registry=r
        )
        self.api_latency = Histogram(
            "sems_api_request_duration_seconds",
            "API request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.forecasts = Counter(
            "sems_forecasts_total", "Facility forecasts attempted, by result", ["result"],
            registry=r,
        )
        self.forecast_duration = Histogram(
            "sems_forecast_duration_seconds", "One facility's forecast: read, fit, store",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.forecast_cycle_duration = Histogram(
            "sems_forecast_cycle_duration_seconds", "A forecast cycle over this worker's "
            "facilities", buckets=(0.5, 1, 5, 10, 30, 60, 120, 300, 600, 900), registry=r,
        )
        self.forecast_choice_duration = Histogram(
            "sems_forecast_model_choice_duration_seconds", "One facility's model backtest",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )
        self.forecast_last_success = Gauge(
            "sems_forecast_last_success_timestamp_seconds",
            "When each facility's newest forecast was made", ["facility_id"], registry=r,
        )
        self.forecast_weather_used = Gauge(
            "sems_forecast_weather_used", "1 when the facility's newest forecast used weather",
            ["facility_id"], registry=r,
        )
        self.forecast_weather_failures = Counter(
            "sems_forecast_weather_failures_total",
            "Forecasts made without weather because the provider failed", registry=r,
        )
        self.api_rate_limited = Counter(
            "sems_api_rate_limited_total", "API requests refused by the rate limit",
            ["credential"], registry=r,
        )
        self.dr_events = Counter(
            "sems_dr_events_total", "Demand-response events reaching a status",
            ["status"], registry=r,
        )
        self.bms_commands = Counter(
            "sems_bms_commands_total", "BMS commands sent, by kind and result (ok, failed)",
            ["kind", "result"], registry=r,
        )
        # Isolation (docs/operations.md, "When one item fails"): a DR event, a BMS command, a
        # facility's forecast or model choice, a facility's idle tick that failed alone.
        self.item_failures = Counter(
            "sems_item_failures_total", "Items that failed on their own while their loop went "
            "on, by loop (dr_event, bms_command, forecast, forecast_choice, rollup_idle)",
            ["loop"], registry=r,
        )
        for loop in ITEM_LOOPS:
            self.item_failures.labels(loop)
        self.dr_watchdog_restores = Counter(
            "sems_dr_watchdog_restores_total", "Loads the DR watchdog restored from the audit "
            "trail because their release was not executed by its deadline", ["facility_id"],
            registry=r,
        )
        self.event_loop_lag = Gauge(
            "sems_event_loop_lag_seconds", "Longest delay of the event loop's periodic probe "
            "over the last sampling window (a stalled loop delays every API answer)",
            registry=r,
        )
        self.shutdown_abandoned = Counter(
            "sems_shutdown_abandoned_total", "Tasks still running when the shutdown grace "
            "(SEMS_SHUTDOWN_GRACE_S) ran out and were abandoned", registry=r,
        )
        for kind in ("zone_setpoint_offset", "lighting_level"):  # at 0, so the first failure
            for result in ("ok", "failed"):  # is an increase that alerts can see
                self.bms_commands.labels(kind, result)
