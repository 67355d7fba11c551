#!/usr/bin/env bash
# A single InfluxDB 2.7 server (influxd) on 127.0.0.1, built from source from the Go module proxy
# (module github.com/influxdata/influxdb/v2; Flux's libflux is Rust, built by cargo from crates.io).
# No Docker, no release tarball, no systemd.
#
#   influxdb.sh install                 build influxd once (cached outside the repo), print its path
#   influxdb.sh start  [DIR] [PORT]     run in the background, wait until ready, set up once
#   influxdb.sh stop   [DIR]            stop the server whose pid file is in DIR, wait
#   influxdb.sh status [DIR]            exit 0 when running, 3 when not
#   influxdb.sh run    [DIR] [PORT]     exec influxd in the foreground (a harness keeps its pid);
#                                       it does NOT do the one-time setup, see below
#   influxdb.sh setup  [DIR] [PORT]     wait until the server on PORT is ready, then do the
#                                       one-time setup if it has not been done (idempotent)
#
# Defaults: DIR=.run/influxdb under the repository, PORT=8086. All state lives in DIR
# (influxd.bolt, influxd.sqlite, engine/, influxd.log, influxd.pid). Only the HTTP port is
# opened (influxd 2.7 has no other listener), bound to 127.0.0.1; telemetry is off.
#
# Environment:
#   INFLUXDB_START_TIMEOUT_S  (default 60) bounds the wait for readiness in `start` and `setup`.
#   SERVICES_CACHE_DIR        (default ~/.cache/sems) where the built binary is cached, as
#                             $SERVICES_CACHE_DIR/influxdb/<version>/influxd, with the build log.
#   Go's module/build caches (GOMODCACHE, GOCACHE) and cargo's registry stay user-level;
#   libflux's cargo target dir lives under GOCACHE/pkgconfig, so a rebuild reuses it.
#
# One-time setup (what `start` and `setup` do, and what a harness using `run` must do itself once
# GET /health answers 200): when GET /api/v2/setup answers {"allowed": true}, then
#   POST http://127.0.0.1:PORT/api/v2/setup   Content-Type: application/json
#   {"username": "sems", "password": "sems-dev-password", "org": "sems", "bucket": "sems",
#    "token": "sems-dev-token"}
# (no retentionPeriodSeconds: the bucket keeps data forever). Afterwards every API call sends
# `Authorization: Token sems-dev-token`; influxdb-client: InfluxDBClient(url=..., token=...,
# org="sems"). The setup is stored in DIR, so it is done once per DIR, not once per start.
# A harness can also just call `influxdb.sh setup DIR PORT` after starting `run`.
#
# Stopping: influxd shuts down cleanly on SIGINT (what `stop` sends). It does not catch SIGTERM,
# which ends it at once; points already acknowledged survive that too (the WAL is fsynced per
# write), so SIGTERM/SIGKILL from a harness are safe, only less tidy.
#
# Flags given: --bolt-path, --engine-path, --sqlite-path (all in DIR), --http-bind-address
# 127.0.0.1:PORT, --reporting-disabled, --ui-disabled (no UI assets are built in). Other settings
# can be given as INFLUXD_* environment variables (e.g. INFLUXD_STORAGE_RETENTION_CHECK_INTERVAL=1m,
# INFLUXD_LOG_LEVEL=error) or a config.toml in DIR (INFLUXD_CONFIG_PATH is set to DIR).
#
# Build needs: go (>= 1.23), cargo/rustc via rustup with a `stable` toolchain, gcc, curl. The
# first build takes minutes (Go deps + 178 Rust crates with LTO); afterwards `install` is a
# no-op that only prints the cached path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

VERSION="v2.7.12"              # the newest 2.7 patch on the Go module proxy
MODULE="github.com/influxdata/influxdb/v2"
BUILD_TAGS="sqlite_foreign_keys,sqlite_json"   # no `assets`: the UI bundle cannot be fetched
CACHE="${SERVICES_CACHE_DIR:-$HOME/.cache/sems}/influxdb/$VERSION"
BIN="$CACHE/influxd"
STAMP="$CACHE/influxd.stamp"

ORG="sems"
BUCKET="sems"
TOKEN="sems-dev-token"
ADMIN_USER="sems"
ADMIN_PASSWORD="sems-dev-password"

die() { echo "influxdb.sh: $*" >&2; exit 1; }

abs_dir() {
    # A DIR given by the caller is relative to the caller's cwd; the default lives in the repo.
    local dir="${1:-$ROOT/.run/influxdb}"
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}

build() {
    # The recipe. Its text is part of the stamp: editing it rebuilds.
    local work="$1" out="$2"
    local src
    src="$(cd "$work/.." && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$src" ] && [ -d "$src" ] || die "go mod download found no source for $MODULE@$VERSION"
    # The module's go.mod has a `replace`, so `go install module@version` is refused: build in a
    # writable copy of the module instead (the module cache is read-only).
    cp -r "$src" "$work/src"
    chmod -R u+w "$work/src"
    chmod +x "$work/src/scripts/pkg-config.sh"   # module zips keep no exec bits
    cd "$work/src"
    # scripts/pkg-config.sh answers cgo's `pkg-config flux` by building libflux with cargo.
    # Flux pins Rust 1.72 (rust-toolchain.toml), which rustup cannot download here: use stable.
    # Its crates deny warnings (feature `strict`), and rustc 1.95 warns where 1.72 did not
    # (mismatched_lifetime_syntaxes, dead_code): cap lints at warn. Not via RUSTFLAGS: with
    # `--target` (pkg-config passes one) cargo leaves RUSTFLAGS off build scripts and their
    # dependencies, and flux's build script depends on flux-core. A rustc wrapper reaches both.
    cat >"$CACHE/rustc-cap-lints" <<'WRAP'
#!/bin/sh
# cargo calls: rustc-cap-lints RUSTC ARGS...; it passes --cap-lints allow for registry crates.
for a in "$@"; do case "$a" in --cap-lints|--cap-lints=*) exec "$@" ;; esac; done
exec "$@" --cap-lints warn
WRAP
    chmod +x "$CACHE/rustc-cap-lints"
    env PKG_CONFIG="$work/src/scripts/pkg-config.sh" \
        RUSTUP_TOOLCHAIN=stable \
        RUSTC_WRAPPER="$CACHE/rustc-cap-lints" \
        CARGO_TERM_COLOR=never \
        CGO_ENABLED=1 \
        GOTOOLCHAIN=local \
        GOFLAGS="-mod=mod -buildvcs=false" \
        go build -tags "$BUILD_TAGS" \
            -ldflags "-s -w -X main.version=${VERSION#v} -X main.commit=goproxy" \
            -o "$out" ./cmd/influxd
}

recipe_sum() {
    { echo "$VERSION $MODULE $BUILD_TAGS"; declare -f build; } | sha256sum | cut -d' ' -f1
}

installed() {
    [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(recipe_sum)" ]
}

cmd_install() {
    if ! installed; then
        mkdir -p "$CACHE"
        # One build at a time: parallel test sessions may all ask for the binary.
        exec 9>"$CACHE/install.lock"
        flock 9
        if ! installed; then
            command -v go >/dev/null 2>&1 || die "go is not installed"
            if ! command -v cargo >/dev/null 2>&1; then
                [ -x "$HOME/.cargo/bin/cargo" ] || die "cargo is not installed (rustup)"
                PATH="$HOME/.cargo/bin:$PATH"
            fi
            local work="$CACHE/build.tmp.$$" log="$CACHE/build.log" started=$SECONDS
            rm -rf "$CACHE"/build.tmp.*
            mkdir -p "$work"
            echo "influxdb.sh: building influxd $VERSION from source (Go + Rust; about 7 min" \
                "the first time on 2 cores), log: $log" >&2
            if ! (build "$work" "$work/influxd") >"$log" 2>&1; then
                tail -n 60 "$log" >&2
                rm -rf "$work"
                die "building influxd failed (log: $log)"
            fi
            "$work/influxd" version >>"$log" 2>&1 \
                || { tail -n 20 "$log" >&2; rm -rf "$work"; die "the built influxd does not run"; }
            mv -f "$work/influxd" "$BIN"
            recipe_sum >"$STAMP.tmp"
            mv -f "$STAMP.tmp" "$STAMP"
            rm -rf "$work"
            echo "influxdb.sh: built $BIN in $((SECONDS - started))s" >&2
        fi
        exec 9>&-  # `run` execs the server next: it must not inherit the lock
    fi
    echo "$BIN"
}

influxd_args() {
    local dir="$1" port="$2"
    printf '%s\n' "$BIN" \
        "--bolt-path=$dir/influxd.bolt" \
        "--engine-path=$dir/engine" \
        "--sqlite-path=$dir/influxd.sqlite" \
        "--http-bind-address=127.0.0.1:$port" \
        --reporting-disabled \
        --ui-disabled \
        --log-level=info
}

prepare() {
    installed || cmd_install >/dev/null
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_run() {
    local dir port="${2:-8086}"
    dir="$(abs_dir "${1:-}")"
    prepare
    local -a args
    mapfile -t args < <(influxd_args "$dir" "$port")
    cd "$dir"
    # A config file is read from INFLUXD_CONFIG_PATH (default: the cwd); flags win over it.
    INFLUXD_CONFIG_PATH="$dir" exec "${args[@]}"
}

pid_alive() {
    # A stale pid file may name a pid that the system has since given to another program.
    local pidfile="$1/influxd.pid"
    [ -f "$pidfile" ] && tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$pidfile")/cmdline" \
        | grep -qF -- "--bolt-path=$1/influxd.bolt "
}

wait_ready() {
    # GET /health answers 200 once the HTTP API is up. Optional pid: fail early if it dies.
    local port="$1" pid="${2:-}" dir="${3:-}"
    local timeout_s="${INFLUXDB_START_TIMEOUT_S:-60}"
    local deadline=$((SECONDS + timeout_s))
    until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/influxd.pid"
            tail -n 30 "$dir/influxd.log" >&2 2>/dev/null || true
            die "influxd exited during start-up (log: $dir/influxd.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -n "$dir" ] && { tail -n 30 "$dir/influxd.log" >&2 2>/dev/null || true; }
            die "influxd on port $port was not ready within ${timeout_s}s"
        fi
        sleep 0.2
    done
}

setup_once() {
    local port="$1" url="http://127.0.0.1:$1"
    if curl -fsS --max-time 10 "$url/api/v2/setup" | grep -q '"allowed": *true'; then
        curl -fsS --max-time 30 -o /dev/null -X POST "$url/api/v2/setup" \
            -H 'Content-Type: application/json' \
            -d "{\"username\":\"$ADMIN_USER\",\"password\":\"$ADMIN_PASSWORD\",\"org\":\"$ORG\",\"bucket\":\"$BUCKET\",\"token\":\"$TOKEN\"}" \
            || die "POST $url/api/v2/setup failed"
        echo "influxdb set up: org $ORG, bucket $BUCKET, token $TOKEN (user $ADMIN_USER)"
    fi
    # Set up before (perhaps by someone else): the token must still open the bucket.
    curl -fsS --max-time 10 -o /dev/null -H "Authorization: Token $TOKEN" \
        "$url/api/v2/buckets?org=$ORG&name=$BUCKET" \
        || die "the server on port $port was set up with another org/bucket/token than $ORG/$BUCKET/$TOKEN"
}

cmd_setup() {
    local port="${2:-8086}"
    wait_ready "$port"
    setup_once "$port"
}

cmd_start() {
    local dir port="${2:-8086}"
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "influxdb already running (pid $(cat "$dir/influxd.pid"), $dir)"
        return 0
    fi
    port_open "$port" && die "port $port on 127.0.0.1 is already in use"
    prepare
    local -a args
    mapfile -t args < <(influxd_args "$dir" "$port")
    (cd "$dir" && INFLUXD_CONFIG_PATH="$dir" exec nohup "${args[@]}" >>"$dir/influxd.log" 2>&1) &
    local pid=$!
    echo "$pid" >"$dir/influxd.pid"
    wait_ready "$port" "$pid" "$dir"
    setup_once "$port"
    echo "influxdb ready on http://127.0.0.1:$port (org $ORG, bucket $BUCKET, token $TOKEN," \
        "pid $pid, $dir)"
}

cmd_stop() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if ! pid_alive "$dir"; then
        rm -f "$dir/influxd.pid"
        echo "influxdb not running ($dir)"
        return 0
    fi
    local pid
    pid="$(cat "$dir/influxd.pid")"
    # influxd shuts down cleanly (flushes, closes bolt/sqlite/engine) on SIGINT only: it does not
    # catch SIGTERM, which ends it at once (written points survive that too: the WAL is fsynced).
    kill -INT "$pid"
    local deadline=$((SECONDS + 60)) killed=""
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$killed" ] && [ "$SECONDS" -ge "$deadline" ]; then
            echo "influxdb.sh: pid $pid ignored SIGINT for 60s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
        fi
        sleep 0.2
    done
    rm -f "$dir/influxd.pid"
    echo "influxdb stopped ($dir)"
}

cmd_status() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "influxdb running (pid $(cat "$dir/influxd.pid"), $dir)"
    else
        echo "influxdb not running ($dir)"
        return 3
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    run) shift; cmd_run "$@" ;;
    setup) shift; cmd_setup "$@" ;;
    *) echo "usage: $0 install | start [DIR] [PORT] | stop [DIR] | status [DIR]" \
            "| run [DIR] [PORT] | setup [DIR] [PORT]" >&2
       exit 2 ;;
esac
