"""All I/O: MQTT, the embedded SQLite store, and (later) Kafka, InfluxDB, PostgreSQL, Redis."""
