#!/usr/bin/env bash
# A private Redis 7 server on 127.0.0.1 from Debian's redis-server package, without persistence
# (no RDB snapshots, no AOF: a restart starts empty). No Docker, no systemd.
#
#   redis.sh install                 apt-get install redis-server when it is missing
#   redis.sh start  [DIR] [PORT]     run the server in the background, wait until it answers
#                                    PING (and INFO names its pid); the last line of stdout is
#                                    the URL
#   redis.sh stop   [DIR]            stop the server whose pid file is in DIR (SIGTERM), wait
#   redis.sh status [DIR]            exit 0 when running, 3 when not
#   redis.sh run    [DIR] [PORT]     exec the server in the foreground: the caller's pid IS the
#                                    server's (tests keep it this way); it logs to stdout
#
# Defaults: DIR=.run/redis under the repository, PORT=6379. URL: redis://127.0.0.1:PORT/0
# DIR holds redis.pid (both modes), redis.log (`start`), and is the server's working directory.
# Environment: REDIS_START_TIMEOUT_S (default 30) bounds the wait in `start`,
# REDIS_STOP_TIMEOUT_S (default 30) the wait in `stop` before SIGKILL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

die() { echo "redis.sh: $*" >&2; exit 1; }

abs_dir() {
    # A DIR given by the caller is relative to the caller's cwd; the default lives in the repo.
    local dir="${1:-$ROOT/.run/redis}"
    mkdir -p "$dir"
    (cd "$dir" && pwd -P)
}

check_port() {
    case "$1" in
        ''|*[!0-9]*) die "PORT must be a number, not '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then die "PORT out of range: $1"; fi
}

server_bin() {
    command -v redis-server 2>/dev/null || { [ -x /usr/bin/redis-server ] && echo /usr/bin/redis-server; }
}

cmd_install() {
    [ -n "$(server_bin)" ] && return 0
    local -a sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "redis.sh: installing redis-server (Debian package)" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 redis-server >/dev/null \
        || die "apt-get install redis-server failed"
    [ -n "$(server_bin)" ] || die "redis-server is still missing after apt-get install"
}

server_cmd() {
    # One line per argument. --dir is also the server's working directory (the pid check uses it).
    local dir="$1" port="$2" bin
    bin="$(server_bin)" || true
    [ -n "$bin" ] || die "redis-server is not installed: run $0 install"
    printf '%s\n' "$bin" --port "$port" --bind 127.0.0.1 --protected-mode yes \
        --save "" --appendonly no --dir "$dir" --daemonize no --logfile ""
}

answering_pid() {
    # The process id of the server that answers PING on 127.0.0.1:PORT (from INFO server), so a
    # start whose port is taken by another server does not take its PONG for its own. Prints
    # nothing while no server answers. redis-cli when present, else a raw socket.
    local port="$1" line pong=""
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] || return 0
        redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r' \
            | sed -n 's/^process_id://p'
    else
        # Braces: a bare `exec 3<>... 2>/dev/null` would silence this shell's stderr for good.
        { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 0
        printf 'PING\r\nINFO server\r\n' >&3
        while read -r -t 2 line <&3; do
            line="${line%$'\r'}"
            [ "$line" = +PONG ] && pong=1
            case "$line" in
                process_id:*) if [ -n "$pong" ]; then echo "${line#process_id:}"; fi; break ;;
            esac
        done
        exec 3>&-
    fi
    return 0
}

proc_running() {
    # kill -0 also succeeds on a zombie (an exited server that its parent has not reaped yet).
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pid_alive() {
    # A stale pid file may name a pid that the system has since given to another program: the
    # server's working directory is DIR (--dir), and its command name is redis-server.
    local dir="$1" pid
    pid="$(cat "$dir/redis.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && proc_running "$pid" \
        && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] \
        && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir" ]
}

url() { echo "redis://127.0.0.1:$1/0"; }

cmd_run() {
    local dir port="${2:-6379}"
    check_port "$port"
    dir="$(abs_dir "${1:-}")"
    pid_alive "$dir" && die "a server already runs on $dir (pid $(cat "$dir/redis.pid"))"
    local -a cmd
    mapfile -t cmd < <(server_cmd "$dir" "$port")
    [ "${#cmd[@]}" -gt 0 ] || exit 1
    cd "$dir"
    echo "$$" >"$dir/redis.pid"  # exec keeps this pid
    exec "${cmd[@]}"
}

cmd_start() {
    local dir port="${2:-6379}"
    check_port "$port"
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "redis already running (pid $(cat "$dir/redis.pid"), $dir)"
        return 0
    fi
    local -a cmd
    mapfile -t cmd < <(server_cmd "$dir" "$port")
    [ "${#cmd[@]}" -gt 0 ] || exit 1
    local log="$dir/redis.log"
    cd "$dir"
    # setsid: out of the caller's process group (a Ctrl-C of `make` does not reach the server).
    # A background job of a non-interactive shell leads no process group, so setsid execs without
    # forking: $! is the server's pid.
    nohup setsid "${cmd[@]}" </dev/null >>"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/redis.pid"
    local timeout_s="${REDIS_START_TIMEOUT_S:-30}"
    local deadline=$((SECONDS + timeout_s))
    until [ "$(answering_pid "$port")" = "$pid" ]; do
        if ! proc_running "$pid"; then
            rm -f "$dir/redis.pid"
            tail -n 20 "$log" >&2 2>/dev/null || true
            die "the server exited during start-up (log: $log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$log" >&2 2>/dev/null || true
            die "the server was not ready within ${timeout_s}s (pid $pid, log: $log)"
        fi
        sleep 0.02
    done
    echo "redis ready on 127.0.0.1:$port (pid $pid, $dir)"
    url "$port"
}

cmd_stop() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if ! pid_alive "$dir"; then
        rm -f "$dir/redis.pid"
        echo "redis not running ($dir)"
        return 0
    fi
    local pid
    pid="$(cat "$dir/redis.pid")"
    kill -TERM "$pid"
    local timeout_s="${REDIS_STOP_TIMEOUT_S:-30}"
    local deadline=$((SECONDS + timeout_s))
    while proc_running "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "redis.sh: pid $pid ignored SIGTERM for ${timeout_s}s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.02
    done
    rm -f "$dir/redis.pid"
    echo "redis stopped ($dir)"
}

cmd_status() {
    local dir
    dir="$(abs_dir "${1:-}")"
    if pid_alive "$dir"; then
        echo "redis running (pid $(cat "$dir/redis.pid"), $dir)"
    else
        echo "redis not running ($dir)"
        return 3
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    run) shift; cmd_run "$@" ;;
    *) echo "usage: $0 install | start [DIR] [PORT] | stop [DIR] | status [DIR] | run [DIR] [PORT]" >&2
       exit 2 ;;
esac
