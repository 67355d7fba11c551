"""``python -m bench.soak --profile production``: the same soak with SEMS on InfluxDB,
PostgreSQL and Redis (servers of tests/servers.py, on free ports), PostgreSQL restarted in the
middle (SIGINT, its fast shutdown, then started again on the same data), and the readings
looked for through the store's own read path instead of SQLite."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from connectors.postgres.migrate import upgrade
from core.metrics import Metrics
from streams.settings import Settings
from streams.stores import build_store
from tests.servers import INFLUX_ORG, INFLUX_TOKEN, InfluxDB, Postgres, Redis


@dataclass
class ProductionServers:
    influx: InfluxDB
    postgres: Postgres
    redis: Redis
    bucket_prefix: str

    @classmethod
    def start(cls, root: Path) -> ProductionServers:
        influx = InfluxDB(root / "influxdb").start()
        postgres = Postgres(root / "postgres").start()
        redis = Redis(root / "redis").start()
        upgrade(postgres.dsn)
        return cls(influx, postgres, redis, f"soak{uuid.uuid4().hex[:6]}")

    def env(self) -> dict[str, str]:
        return {"SEMS_INFLUX_URL": self.influx.url, "SEMS_INFLUX_TOKEN": INFLUX_TOKEN,
                "SEMS_INFLUX_ORG": INFLUX_ORG, "SEMS_INFLUX_BUCKET_PREFIX": self.bucket_prefix,
                "SEMS_POSTGRES_DSN": self.postgres.dsn, "SEMS_REDIS_URL": self.redis.url}

    def restart_postgres(self) -> None:
        self.postgres.stop()
        self.postgres.start()

    def stop(self) -> None:
        for server in (self.redis, self.postgres, self.influx):
            server.stop()

    async def stored_readings(self, data_dir: Path, facility_ids: list[str],
                              since: datetime) -> set[tuple[str, int]]:
        """Every stored (meter_id, ts_ms) of the facilities since ``since``."""
        settings = Settings.model_validate({
            "profile": "production", "data_dir": data_dir / "reader",
            "influx_url": self.influx.url, "influx_token": INFLUX_TOKEN,
            "influx_org": INFLUX_ORG, "influx_bucket_prefix": self.bucket_prefix,
            "postgres_dsn": self.postgres.dsn, "redis_url": self.redis.url})
        store = build_store(settings, Metrics())
        await store.open()
        try:
            found: set[tuple[str, int]] = set()
            for fid in facility_ids:
                for r in await store.readings_since(fid, since):
                    found.add((r.meter_id, round(r.timestamp.timestamp() * 1000)))
            return found
        finally:
            await store.close()
