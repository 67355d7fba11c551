"""The adapters of a profile: the embedded one needs nothing installed; production talks to
InfluxDB, PostgreSQL and Redis. Runtimes and the API see only the ports."""

from __future__ import annotations

import logging

from connectors.cache import MemoryCache, RedisCache
from connectors.sqlite import SqliteStore
from connectors.weather import ClimatologyWeather, NoWeather, WeatherApiClient
from core.metrics import Metrics
from streams.settings import Settings, SettingsError
from tables.ports.cache import Cache
from tables.ports.identity import SessionStore
from tables.ports.store import Store
from tables.ports.weather import WeatherProvider

log = logging.getLogger(__name__)


def build_store(settings: Settings, metrics: Metrics) -> Store:
    if settings.profile == "embedded":
        return SqliteStore(settings.database_path, metrics=metrics)
    from connectors.influx import InfluxBuckets, InfluxTimeSeries
    from connectors.postgres import PostgresStore
    from connectors.production import ProductionStore

    prefix = settings.influx_bucket_prefix
    buckets = InfluxBuckets(
        raw=f"{prefix}_raw", raw_days=settings.retention_raw_days,
        minute=f"{prefix}_rollups_1m", minute_days=settings.retention_rollup_1m_days,
        rollups=f"{prefix}_rollups", rollups_days=settings.retention_rollup_days,
    )
    influx = InfluxTimeSeries(settings.influx_url, settings.influx_token.get_secret_value(),
                              settings.influx_org, buckets=buckets, metrics=metrics,
                              timeout_s=settings.influx_timeout_s)
    postgres = PostgresStore(settings.postgres_dsn.get_secret_value(), metrics=metrics,
                             max_size=settings.postgres_pool_max,
                             timeout_s=settings.postgres_timeout_s)
    return ProductionStore(influx, postgres)


def build_cache(settings: Settings) -> Cache | None:
    """The API's cache of ``/current``: Redis in production (when a URL is set), in-process
    for the embedded profile, so both serve the same TTL semantics."""
    if settings.profile == "production":
        return RedisCache(settings.redis_url) if settings.redis_url else None
    return MemoryCache()


def build_sessions(settings: Settings, store: Store) -> SessionStore | None:
    """Where signed-in sessions live (issue 16): in the embedded store's file, or in Redis in
    production (``SEMS_REDIS_URL``). Production without Redis has none: people cannot sign in
    (``POST /api/auth/login`` answers 503 ``sign_in_unavailable``) while bearer tokens and API
    keys work as before; there is no in-process fallback that would sign people out at every
    restart or differ between API processes. Not yet open: the Redis client connects on first
    use and is closed by the composition root."""
    if settings.profile == "embedded":
        if not isinstance(store, SqliteStore):
            raise SettingsError("the embedded profile keeps sessions in its SQLite store")
        return store.sessions
    if not settings.redis_url:
        log.warning("no SEMS_REDIS_URL: people cannot sign in (sessions live in Redis in the "
                    "production profile); bearer tokens and API keys work")
        return None
    from connectors.cache.redis_sessions import RedisSessions

    return RedisSessions(settings.redis_url)


def build_weather(settings: Settings) -> WeatherProvider:
    """The configured provider, not yet open: the composition root opens it at start-up and
    closes it at shutdown."""
    if settings.weather_provider == "none":
        return NoWeather()
    if settings.weather_provider == "offline":
        return ClimatologyWeather()
    if settings.weather_api_key is None:  # the settings refuse this already
        raise SettingsError(
            "SEMS_WEATHER_API_KEY is required with SEMS_WEATHER_PROVIDER=weatherapi")
    return WeatherApiClient(api_key=settings.weather_api_key.get_secret_value(),
                            base_url=settings.weather_api_url,
                            timeout_s=settings.weather_timeout_s)
