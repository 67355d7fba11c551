"""One frozen, validated settings object, read once from ``SEMS_*`` at start-up.

Nothing else reads the environment. Unknown ``SEMS_*`` keys are an error, so a typo does not
silently fall back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.metadata import DrBaselineMethod
from tables.rollups import WindowSettings

PREFIX = "SEMS_"
DEFAULT_DATA_DIR = Path(".run/data")


class SettingsError(ValueError):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # embedded: SQLite and an in-process cache, nothing to install. production: InfluxDB for
    # time series, PostgreSQL for metadata and events, Redis for the API cache, and the kafka
    # runtime unless SEMS_RUNTIME says otherwise.
    profile: Literal["embedded", "production"] = "embedded"
    runtime: Literal["local", "kafka"] = "local"
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # MQTT ingestion; without a URL the embedded simulator feeds the pipeline in-process.
    mqtt_url: str | None = None
    mqtt_client_id: str = "sems-ingest-1"
    mqtt_share_group: str | None = "sems"

    # Kafka runtime.
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: Annotated[int, Field(ge=1, le=1000)] = 8
    kafka_app_id: str = "sems"

    # Production stores.
    influx_url: str = "http://127.0.0.1:8086"
    influx_token: SecretStr = SecretStr("sems-dev-token")
    influx_org: str = "sems"
    influx_bucket_prefix: str = "sems"
    influx_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    postgres_dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/sems")
    postgres_pool_max: Annotated[int, Field(ge=1, le=100)] = 8
    postgres_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    current_cache_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    # Windows and validation.
    allowed_lateness_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_future_s: Annotated[float, Field(ge=0)] = 300.0

    # Batching between stages.
    batch_max: Annotated[int, Field(ge=1)] = 2000
    batch_within_s: Annotated[float, Field(gt=0)] = 0.05
    channel_capacity: Annotated[int, Field(ge=1)] = 20_000

    # API.
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    api_max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    api_rate_per_s: Annotated[float, Field(gt=0)] = 50.0
    api_rate_burst: Annotated[int, Field(ge=1)] = 200
    # Before authentication, per client address: garbage tokens and forged webhooks are
    # limited too, and one address cannot spend the budgets of the credentials it holds.
    api_client_rate_per_s: Annotated[float, Field(gt=0)] = 200.0
    api_client_rate_burst: Annotated[int, Field(ge=1)] = 400
    # The registry (facilities, meters) as the routes read it, from memory for this long.
    api_metadata_ttl_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # Processes of `sems api`, all serving api_port (SO_REUSEPORT).
    api_workers: Annotated[int, Field(ge=1, le=64)] = 1

    # Authentication: bearer JWTs (RS256). Without a JWKS URL, SEMS is its own issuer with a
    # key in <data_dir>/auth/ (`sems token create`); with one, tokens come from that OIDC
    # provider (Auth0, Keycloak...), whose issuer and audience must match.
    auth_jwks_url: str | None = None
    auth_issuer: str = "sems-local"
    auth_audience: str = "sems-api"
    auth_leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    auth_role_claim: str = "sems_role"
    auth_facilities_claim: str = "sems_facilities"

    # People's sign-in (issue 16): session cookies are `__Host-sems_session` and Secure when
    # the API is reached over TLS (directly or behind a TLS proxy), else `sems_session`.
    # A session ends after session_idle_timeout_s without a request, or session_lifetime_s
    # after its sign-in. Sign-ins are limited per account and per client address (a
    # minute's worth each at once); an account is locked after sign_in_lockout_after
    # consecutive failures, for sign_in_lockout_base_s doubling with each further failure
    # up to sign_in_lockout_max_s. argon2id's costs (50-250 ms a sign-in is the target).
    # A one-time password-reset token works for password_reset_ttl_s.
    api_secure_cookies: bool = False
    session_idle_timeout_s: Annotated[float, Field(ge=60, le=7 * 86_400)] = 1800.0
    session_lifetime_s: Annotated[float, Field(ge=300, le=31 * 86_400)] = 12 * 3600.0
    sign_in_account_per_min: Annotated[int, Field(ge=1, le=10_000)] = 10
    sign_in_address_per_min: Annotated[int, Field(ge=1, le=100_000)] = 30
    sign_in_lockout_after: Annotated[int, Field(ge=1, le=100)] = 5
    sign_in_lockout_base_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    sign_in_lockout_max_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    argon2_memory_kib: Annotated[int, Field(ge=8 * 1024, le=1024 * 1024)] = 19_456
    password_reset_ttl_s: Annotated[float, Field(ge=60, le=7 * 86_400)] = 1800.0

    # Demo fleet: register the simulated facilities and meters, and publish their readings
    # (in-process, or over MQTT when mqtt_url is set).
    demo_fleet: bool = True
    simulate: bool = True
    simulate_facilities: Annotated[int, Field(ge=1)] = 3
    simulate_meters: Annotated[int, Field(ge=1)] = 4
    simulate_seed: int = 42
    simulate_backfill_s: Annotated[float, Field(ge=0)] = 3 * 3600

    # Load forecasts: each facility's next 24 h every forecast_interval_s, forecast_delay_s after
    # the quarter hour (when its rollup is final), from forecast_history_days of 15-minute
    # rollups; each facility's model is chosen again by backtest every forecast_reselect_s.
    forecast_enabled: bool = True
    forecast_interval_s: Annotated[float, Field(ge=60, le=86_400)] = 900.0
    forecast_delay_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    forecast_history_days: Annotated[int, Field(ge=1, le=730)] = 56
    forecast_reselect_s: Annotated[float, Field(ge=60)] = 86_400.0

    # Demand response (docs/demand-response.md): the BMS commanded (unset URL: the in-process
    # simulated BMS on the demo fleet), the baseline method, the planner's comfort limits, the
    # staged release and how long after an event its report waits for the rollups.
    bms_url: str | None = None
    bms_port: Annotated[int, Field(ge=0, le=65535)] = 0
    bms_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    dr_baseline: DrBaselineMethod = "auto"
    dr_max_setpoint_offset_c: Annotated[float, Field(gt=0, le=10)] = 4.0
    dr_min_lighting_pct: Annotated[float, Field(ge=0, le=100)] = 30.0
    dr_sites: Path | None = None
    dr_release_stages: Annotated[int, Field(ge=1, le=10)] = 3
    dr_release_gap_s: Annotated[float, Field(ge=0, le=3600)] = 300.0
    dr_report_timeout_s: Annotated[float, Field(ge=0, le=86_400)] = 600.0
    # Bounds of what a utility may ask: an event starts at most dr_max_lead_s ahead.
    dr_max_lead_s: Annotated[float, Field(ge=3600, le=366 * 86_400)] = 7 * 86_400.0
    # The watchdog: a load still shed this long after its last release stage was due is
    # restored from the audit trail, whatever the planner and the release path do.
    dr_release_grace_s: Annotated[float, Field(ge=0, le=86_400)] = 900.0

    # A process asked to stop (SIGTERM, SIGINT) stops within this grace, whatever its servers
    # do, saying what it abandoned.
    shutdown_grace_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    # Retention (days): raw readings, 1-minute rollups, 15-minute and hourly rollups. The
    # embedded store prunes itself; InfluxDB buckets are created with these retentions.
    retention_raw_days: Annotated[int, Field(ge=1)] = 90
    retention_rollup_1m_days: Annotated[int, Field(ge=1)] = 90
    retention_rollup_days: Annotated[int, Field(ge=1)] = 730

    # Weather for the load forecasts: offline = a typical-year climatology computed in-process
    # (no network); weatherapi = WeatherAPI.com, which needs a key; none = no weather features.
    weather_provider: Literal["offline", "weatherapi", "none"] = "offline"
    weather_api_key: SecretStr | None = Field(default=None, validate_default=True)
    weather_api_url: str = "https://api.weatherapi.com"
    weather_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @model_validator(mode="before")
    @classmethod
    def _production_runs_on_kafka(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("profile") == "production":
            values.setdefault("runtime", "kafka")
        return values

    @field_validator("weather_api_key")
    @classmethod
    def _weatherapi_needs_a_key(cls, key: SecretStr | None,
                                info: ValidationInfo) -> SecretStr | None:
        if key is not None and not key.get_secret_value():
            key = None
        if key is None and info.data.get("weather_provider") == "weatherapi":
            raise ValueError("required with SEMS_WEATHER_PROVIDER=weatherapi")
        return key

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sems.db"

    @property
    def auth_dir(self) -> Path:
        return self.data_dir / "auth"

    @property
    def windows(self) -> WindowSettings:
        return WindowSettings(allowed_lateness_ms=round(self.allowed_lateness_s * 1000),
                              idle_timeout_ms=round(self.idle_timeout_s * 1000))


def load_settings(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Build settings from ``SEMS_*`` variables, then explicit overrides (CLI flags)."""
    known = set(Settings.model_fields)
    values: dict[str, Any] = {}
    unknown = []
    for key, value in environ.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):].lower()
        if name not in known:
            unknown.append(key)
        values[name] = value
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SettingsError(problems) from None
