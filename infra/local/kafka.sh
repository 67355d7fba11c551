#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1, from the
# jars on Maven Central (infra/kafka/pom.xml). No Docker, no release tarball, no systemd.
#
#   kafka.sh install                         fetch the jars once into .cache/kafka/libs
#   kafka.sh start  [DIR] [PORT] [CPORT]     configure, format once, run in the background, wait
#   kafka.sh stop   [DIR]                    stop the broker whose pid file is in DIR, wait
#   kafka.sh status [DIR]                    exit 0 when running, 3 when not
#   kafka.sh run    [DIR] [PORT] [CPORT]     configure, format once, then exec the broker in the
#                                            foreground (tests/servers.py keeps its pid this way)
#
# Defaults: DIR=.run/kafka under the repository, PORT=9092, CPORT (controller)=9093.
# Environment: KAFKA_START_TIMEOUT_S (default 90) bounds the wait in `start`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POM="$ROOT/infra/kafka/pom.xml"
CACHE="$ROOT/.cache/kafka"
LIBS="$CACHE/libs"
STAMP="$CACHE/libs.pom.sha256"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() { echo "kafka.sh: $*" >&2; exit 1; }

abs_dir() {
    # A DIR given by the caller is relative to the caller's cwd; the default lives in the repo.
    local dir="${1:-$ROOT/.run/kafka}"
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}

pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

installed() {
    [ -f "$STAMP" ] && [ -d "$LIBS" ] && [ "$(cat "$STAMP")" = "$(pom_sum)" ]
}

cmd_install() {
    installed && return 0
    mkdir -p "$CACHE"
    # One fetch at a time: parallel test sessions may all ask for the jars.
    exec 9>"$CACHE/install.lock"
    flock 9
    if installed; then exec 9>&-; return 0; fi
    command -v mvn >/dev/null 2>&1 || die "mvn is not installed (apt-get install maven)"
    local tmp="$CACHE/libs.tmp.$$"
    rm -rf "$tmp"
    echo "kafka.sh: fetching the Kafka broker jars from Maven Central into $LIBS" >&2
    if ! mvn -B -ntp -Dstyle.color=never -f "$POM" -Dkafka.libs.dir="$tmp" package \
            >"$CACHE/install.log" 2>&1; then
        tail -n 40 "$CACHE/install.log" >&2
        rm -rf "$tmp"
        die "mvn could not fetch the Kafka jars (log: $CACHE/install.log)"
    fi
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_sum >"$STAMP"
    exec 9>&-  # `run` execs the broker next: it must not inherit the lock
}

write_config() {
    local dir="$1" port="$2" cport="$3"
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<EOF
# Written by infra/local/kafka.sh; rewritten at every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a crash (kill -9) the restarted broker cannot register until the controller drops the
# dead incarnation's session: 4 s here instead of the default 9 s (heartbeats every 1 s).
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# SEMS creates its topics itself, with explicit partitions and configs.
auto.create.topics.enable=false
EOF
    cat >"$dir/log4j2.properties" <<EOF
# Written by infra/local/kafka.sh. INFO and up to kafka.log, WARN and up to the console.
status = warn
name = sems-kafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/kafka.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
}

java_cmd() {
    # The class path wildcard is expanded by java itself, so it stays quoted.
    local dir="$1"
    printf '%s\n' "$JAVA" -Xms256m -Xmx512m -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" \
        -cp "$LIBS/*"
}

format_once() {
    local dir="$1"
    [ -f "$dir/data/meta.properties" ] && return 0
    local -a java
    mapfile -t java < <(java_cmd "$dir")
    local id
    id="$("${java[@]}" kafka.tools.StorageTool random-uuid)"
    "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
        --ignore-formatted >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "formatting $dir/data failed"; }
}

prepare() {
    local dir="$1" port="$2" cport="$3"
    installed || cmd_install
    write_config "$dir" "$port" "$cport"
    format_once "$dir"
}

cmd_run() {
    local dir port="${2:-9092}" cport="${3:-9093}"
    dir="$(abs_dir "${1:-}")"
    prepare "$dir" "$port" "$cport"
    local -a java
    mapfile -t java < <(java_cmd "$dir")
    exec "${java[@]}" kafka.Kafka "$dir/server.properties"
}

pid_alive() {
    # A stale pid file may name a pid that the system has since given to another program.
    local pidfile="$1/kafka.pid"
    [ -f "$pidfile" ] && tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$pidfile")/cmdline" \
        | grep -q "kafka.Kafka $1/server.properties"
}

cmd_start() {
    local dir port="${2:-9092}" cport="${3:-9093}"
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "kafka already running (pid $(cat "$dir/kafka.pid"), $dir)"
        return 0
    fi
    prepare "$dir" "$port" "$cport"
    # The log is appended to across restarts: only lines after this offset count as ready.
    local log="$dir/kafka.log" offset=0
    [ -f "$log" ] && offset="$(stat -c %s "$log")"
    local -a java
    mapfile -t java < <(java_cmd "$dir")
    nohup "${java[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.out" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/kafka.pid"
    local timeout_s="${KAFKA_START_TIMEOUT_S:-90}"
    local deadline=$((SECONDS + timeout_s))
    until [ -f "$log" ] && tail -c +"$((offset + 1))" "$log" | grep -q "Kafka Server started"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/kafka.pid"
            tail -n 30 "$dir/kafka.out" "$log" >&2 2>/dev/null || true
            die "the broker exited during start-up (logs in $dir)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$log" >&2 2>/dev/null || true
            die "the broker was not ready within ${timeout_s}s (pid $pid, logs in $dir)"
        fi
        sleep 0.2
    done
    echo "kafka ready on 127.0.0.1:$port (controller $cport, pid $pid, $dir)"
}

cmd_stop() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if ! pid_alive "$dir"; then
        rm -f "$dir/kafka.pid"
        echo "kafka not running ($dir)"
        return 0
    fi
    local pid
    pid="$(cat "$dir/kafka.pid")"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "kafka.sh: pid $pid ignored SIGTERM for 60s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    rm -f "$dir/kafka.pid"
    echo "kafka stopped ($dir)"
}

cmd_status() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "kafka running (pid $(cat "$dir/kafka.pid"), $dir)"
    else
        echo "kafka not running ($dir)"
        return 3
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    run) shift; cmd_run "$@" ;;
    *) echo "usage: $0 install | start [DIR] [PORT] [CONTROLLER_PORT] | stop [DIR] | status [DIR]" \
            "| run [DIR] [PORT] [CONTROLLER_PORT]" >&2
       exit 2 ;;
esac
