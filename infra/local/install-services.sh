#!/usr/bin/env bash
# Install the servers SEMS's tests run against, when missing: Mosquitto, Kafka, InfluxDB,
# PostgreSQL, Redis (and kcat, a Kafka client of someone else's). Idempotent and quiet when done.
# The tests start and stop their own instances on 127.0.0.1 (see tests/servers.py).
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # bench/api.py
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool tests the alert rules
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Apache Kafka (KRaft) from Maven Central jars, cached in .cache/kafka (skipped when current).
"$(dirname "$0")/kafka.sh" install
# InfluxDB 2.7 built from the Go module proxy (and libflux from crates.io) once; the binary is
# cached outside the clone (~/.cache/sems), so later runs and fresh clones skip the build.
"$(dirname "$0")/influxdb.sh" install >/dev/null
