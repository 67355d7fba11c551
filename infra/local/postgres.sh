#!/usr/bin/env bash
# A private PostgreSQL 15 server on 127.0.0.1 from Debian's packages. No Docker, no systemd, no
# pg_ctlcluster: one cluster per DIR. initdb and postgres refuse uid 0, so as root the cluster
# belongs to the `postgres` user; otherwise to the caller.
#
#   postgres.sh install                 apt-get install postgresql when initdb 15 is missing
#   postgres.sh start  [DIR] [PORT]     initdb once, run the server in the background, wait; the
#                                       last line of stdout is the DSN
#   postgres.sh stop   [DIR]            fast shutdown (SIGINT) of the server of DIR, wait
#   postgres.sh status [DIR]            exit 0 when running, 3 when not
#   postgres.sh run    [DIR] [PORT]     initdb once, then exec the postmaster in the foreground:
#                                       the caller's pid IS the postmaster's (tests/servers.py
#                                       keeps it). As root through setpriv, which execs without
#                                       forking (su and runuser stay as a parent process).
#
# Defaults: DIR=.run/postgres under the repository, PORT=5432.
# DSN: postgresql://postgres@127.0.0.1:PORT/sems (trust authentication; TCP on 127.0.0.1 only).
#
# Layout: DIR/postgres.log (server log of `start`; `run` logs to its stderr), DIR/init.log, and
# the cluster home H holding data/ (data/sems.conf is rewritten at every start) and the Unix
# socket (psql -h H -p PORT -U postgres sems). H is DIR itself, unless the script runs as root
# and the postgres user cannot search every folder of DIR's path (pytest's tmp_path is under
# /tmp/pytest-of-root, mode 0700): H is then $PG_ROOT_HOMES/<hash of DIR> (default
# /tmp/sems-postgres) and DIR/data is a symlink to H/data. Giving o+x to the path instead would
# not hold: pytest resets pytest-of-root to 0700 at each session start, and a running server
# PANICs on its next checkpoint (it opens DataDir/global/pg_control by absolute path). Such a home
# whose DIR no longer exists, and that no process uses, is removed at the next start as root.
#
# Environment:
#   PG_START_TIMEOUT_S (default 60)  bounds the wait in `start`
#   PG_STOP_TIMEOUT_S  (default 60)  bounds the fast shutdown in `stop` before SIGQUIT, SIGKILL
#   PG_ORPHAN_WAIT_S   (default 15)  bounds the wait for the children of a killed postmaster
#   PG_FAST=1                        fsync=off, synchronous_commit=off, full_page_writes=off (and
#                                    initdb --no-sync): throwaway test clusters only, a crash of
#                                    the machine may corrupt them. Read at every start.
#   PG_ROOT_HOMES                    see above (root only)
#
# Signals to the postmaster (the pid of `run`): SIGTERM = smart shutdown, which waits until every
# client has disconnected; SIGINT = fast shutdown (disconnects clients, checkpoints); SIGQUIT =
# immediate (crash recovery at the next start); SIGKILL = its children notice the death of the
# postmaster and exit within milliseconds; a later start waits for them, then recovers.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PGBIN="/usr/lib/postgresql/15/bin"
OWNER="postgres"  # the OS user of the cluster when running as root
HOMES="${PG_ROOT_HOMES:-/tmp/sems-postgres}"

die() { echo "postgres.sh: $*" >&2; exit 1; }
note() { echo "postgres.sh: $*" >&2; }

is_root() { [ "$(id -u)" -eq 0 ]; }

abs_dir() {
    # A DIR given by the caller is relative to the caller's cwd; the default lives in the repo.
    local dir="${1:-$ROOT/.run/postgres}"
    mkdir -p "$dir"
    (cd "$dir" && pwd -P)
}

check_port() {
    case "$1" in
        ''|*[!0-9]*) die "PORT must be a number, not '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then die "PORT out of range: $1"; fi
}

as_owner() {
    if is_root; then
        setpriv --reuid="$OWNER" --regid="$OWNER" --init-groups --reset-env -- "$@"
    else
        "$@"
    fi
}

exec_as_owner() {
    # setpriv changes the ids and execs: no intermediate process stays between caller and server.
    if is_root; then
        exec setpriv --reuid="$OWNER" --regid="$OWNER" --init-groups --reset-env -- "$@"
    fi
    exec "$@"
}

give_to_owner() { if is_root; then chown "$OWNER:$OWNER" "$@"; fi; }

installed() { [ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/postgres" ]; }

cmd_install() {
    installed && return 0
    local -a sudo=()
    is_root || sudo=(sudo)
    note "installing postgresql (Debian package)"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 postgresql >/dev/null \
        || die "apt-get install postgresql failed"
    installed || die "postgresql is installed but $PGBIN/initdb is missing (not version 15?)"
}

# --- where the cluster lives ------------------------------------------------------------------

home_of() {
    # The cluster home H of DIR, as settled by an earlier start; empty when none was made yet.
    local dir="$1" target
    if [ -L "$dir/data" ]; then
        target="$(readlink "$dir/data")"
        [ -d "$target" ] && dirname "$target"
    elif [ -d "$dir/data" ]; then
        echo "$dir"
    fi
    return 0
}

gc_homes() {
    # Homes under $HOMES whose DIR is gone (or points elsewhere) and that no process uses.
    local h origin
    for h in "$HOMES"/*/; do
        h="${h%/}"
        [ -f "$h/origin" ] || continue
        origin="$(cat "$h/origin")"
        [ "$(readlink "$origin/data" 2>/dev/null)" = "$h/data" ] && continue
        [ -n "$(users_of "$h/data")" ] && continue
        note "removing $h: its DIR $origin no longer uses it"
        rm -rf "$h"
    done
}

settle_home() {
    # Decide H for a DIR that has no cluster yet, or repair a dangling DIR/data symlink.
    local dir="$1" home
    home="$(home_of "$dir")"
    if [ -n "$home" ]; then echo "$home"; return 0; fi
    if [ -L "$dir/data" ]; then
        note "$dir/data pointed to a cluster that no longer exists: making a new one"
        rm -f "$dir/data"
    fi
    if ! is_root; then echo "$dir"; return 0; fi
    id "$OWNER" >/dev/null 2>&1 || die "no '$OWNER' user (apt-get install postgresql)"
    if as_owner test -x "$(dirname "$dir")" 2>/dev/null; then
        echo "$dir"
        return 0
    fi
    mkdir -p "$HOMES"
    if [ -L "$HOMES" ] || [ "$(stat -c %u "$HOMES")" != 0 ]; then
        die "$HOMES is not a folder owned by root: remove it or set PG_ROOT_HOMES"
    fi
    chmod 0711 "$HOMES"
    gc_homes
    home="$HOMES/$(printf '%s' "$dir" | sha256sum | cut -c1-16)"
    mkdir -p "$home"
    # Linked at once (dangling until initdb is done) and before `origin` is written: gc_homes of
    # a parallel start for another DIR skips a home without origin, and keeps one that is linked.
    ln -sfn "$home/data" "$dir/data"
    printf '%s\n' "$dir" >"$home/origin"
    note "the $OWNER user cannot reach $dir: the cluster lives in $home ($dir/data links to it)"
    echo "$home"
}

# --- processes ----------------------------------------------------------------------------------

proc_running() {
    # kill -0 also succeeds on a zombie: an exited postmaster whose parent (pid 1 here, which
    # reaps late) has not collected it yet. State Z or X counts as gone.
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pid_of() { head -n 1 "$1/data/postmaster.pid" 2>/dev/null || true; }

pid_alive() {
    # A stale postmaster.pid may name a pid that the system has since given to another program:
    # the postmaster's working directory is its data directory. Argument: the home H.
    local home="$1" pid
    pid="$(pid_of "$home")"
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$home/data" ]
}

users_of() {
    # Pids whose working directory is the data folder $1: the postmaster and its children. After a
    # SIGKILL of the postmaster, these are its orphans, still attached to its shared memory.
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
    done
    return 0
}

clear_stale() {
    # Before a start on a cluster whose server is not running. Wait for the orphans of a killed
    # postmaster (PostgreSQL refuses to start while they are attached to the old shared memory).
    local home="$1" deadline=$((SECONDS + ${PG_ORPHAN_WAIT_S:-15})) users
    users="$(users_of "$home/data")"
    while [ -n "$users" ]; do
        [ "$SECONDS" -ge "$deadline" ] && die "processes of an earlier server still use" \
            "$home/data: $(echo "$users" | tr '\n' ' ')(stop or kill them)"
        sleep 0.05
        users="$(users_of "$home/data")"
    done
    # Nothing uses the cluster now. PostgreSQL replaces a lock file whose pid is dead by itself
    # (and recycles the old shared memory), but refuses one whose pid kill(0) finds: a zombie
    # postmaster, or a pid reused since the crash (pid_max may be 32768). Those are stale for sure.
    local f pid
    for f in "$home/data/postmaster.pid" "$home"/.s.PGSQL.*.lock; do
        [ -f "$f" ] || continue
        pid="$(head -n 1 "$f")"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            note "removing the stale lock file $f (its pid $pid is no server of this cluster)"
            rm -f "$f"
        fi
    done
}

# --- cluster ------------------------------------------------------------------------------------

sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

write_conf() {
    # Included from postgresql.conf and rewritten at every start: the port, the addresses and
    # the fast settings follow the arguments and the environment of the latest start.
    local home="$1" port="$2" conf="$1/data/sems.conf"
    {
        echo "# Written by infra/local/postgres.sh at every start; edits are lost."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = $(sql_quote "$home")"
        echo "unix_socket_permissions = 0700"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        if [ "${PG_FAST:-0}" = 1 ]; then
            echo "# PG_FAST=1: no durability, for throwaway test clusters."
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
    } >"$conf.tmp"
    chmod 0600 "$conf.tmp"
    give_to_owner "$conf.tmp"
    mv "$conf.tmp" "$conf"
}

init_once() {
    # initdb into H/data.tmp, create the `sems` database in single-user mode (no port needed),
    # then rename to H/data: a folder named data always holds a complete cluster.
    local dir="$1" home="$2"
    [ -f "$home/data/PG_VERSION" ] && return 0
    [ -e "$home/data" ] && die "$home/data exists but holds no cluster (no PG_VERSION): remove it"
    local tmp="$home/data.tmp" log="$dir/init.log"
    rm -rf "$tmp"
    local -a nosync=()
    if [ "${PG_FAST:-0}" = 1 ]; then nosync=(--no-sync); fi
    if ! as_owner "$PGBIN/initdb" -D "$tmp" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            --no-instructions "${nosync[@]}" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$tmp"
        die "initdb failed (log: $log)"
    fi
    cat >"$tmp/pg_hba.conf" <<'EOF'
# Written by infra/local/postgres.sh: trust on the Unix socket (its folder is private to the
# cluster's owner) and on IPv4 loopback; the server listens on nothing else.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
    printf "\n# Added by infra/local/postgres.sh\ninclude_if_exists = 'sems.conf'\n" \
        >>"$tmp/postgresql.conf"
    # Single-user mode reads the configuration too: listen on nothing for this step.
    printf "listen_addresses = ''\n" >"$tmp/sems.conf"
    give_to_owner "$tmp/pg_hba.conf" "$tmp/postgresql.conf" "$tmp/sems.conf"
    if ! echo "CREATE DATABASE sems;" \
            | as_owner "$PGBIN/postgres" --single -D "$tmp" -c exit_on_error=true template1 \
            >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$tmp"
        die "creating the sems database failed (log: $log)"
    fi
    mv "$tmp" "$home/data"
    note "initialized a new cluster in $home/data (database sems)"
}

prepare() {
    # Everything before the server's exec, under a lock on DIR: parallel starts of one DIR must
    # not both initdb. Prints the home H.
    local dir="$1" port="$2" home
    installed || die "PostgreSQL 15 is not installed: run $0 install"
    exec 9>"$dir/.lock"
    flock 9
    home="$(settle_home "$dir")"
    if is_root; then
        chown "$OWNER:$OWNER" "$home"
        chmod 0700 "$home"
    fi
    pid_alive "$home" && die "a server already runs on $home/data (pid $(pid_of "$home"))"
    init_once "$dir" "$home"
    clear_stale "$home"
    write_conf "$home" "$port"
    exec 9>&-  # the server is exec'd or started next: it must not inherit the lock
    echo "$home"
}

dsn() { echo "postgresql://postgres@127.0.0.1:$1/sems"; }

port_of() { sed -n 4p "$1/data/postmaster.pid" 2>/dev/null; }

# --- subcommands --------------------------------------------------------------------------------

cmd_run() {
    local dir home port="${2:-5432}"
    check_port "$port"
    dir="$(abs_dir "${1:-}")"
    home="$(prepare "$dir" "$port")"
    note "exec postgres as pid $$ for $(dsn "$port") (socket in $home)"
    cd "$home/data"
    exec_as_owner "$PGBIN/postgres" -D "$home/data"
}

cmd_start() {
    local dir home port="${2:-5432}"
    check_port "$port"
    dir="$(abs_dir "${1:-}")"
    home="$(home_of "$dir")"
    if [ -n "$home" ] && pid_alive "$home"; then
        local running
        running="$(port_of "$home")"
        echo "postgres already running (pid $(pid_of "$home"), port $running, $dir)"
        [ "$running" = "$port" ] || note "it listens on $running, not on the $port asked for"
        dsn "$running"
        return 0
    fi
    home="$(prepare "$dir" "$port")"
    local log="$dir/postgres.log"
    cd "$home/data"
    # setsid: out of the caller's process group (a Ctrl-C of `make` does not reach the server).
    # A background job of a non-interactive shell leads no process group, so setsid execs without
    # forking, as setpriv does: $! is the postmaster's pid.
    if is_root; then
        nohup setsid setpriv --reuid="$OWNER" --regid="$OWNER" --init-groups --reset-env -- \
            "$PGBIN/postgres" -D "$home/data" </dev/null >>"$log" 2>&1 &
    else
        nohup setsid "$PGBIN/postgres" -D "$home/data" </dev/null >>"$log" 2>&1 &
    fi
    local pid=$!
    local timeout_s="${PG_START_TIMEOUT_S:-60}"
    local deadline=$((SECONDS + timeout_s))
    # Ready: postmaster.pid names this pid and says "ready" (what pg_ctl -w waits for), and the
    # port accepts connections to sems.
    until [ "$(pid_of "$home")" = "$pid" ] \
            && [ "$(sed -n 8p "$home/data/postmaster.pid" 2>/dev/null | tr -d ' ')" = ready ] \
            && "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d sems; do
        if ! proc_running "$pid"; then
            tail -n 20 "$log" >&2 2>/dev/null || true
            die "the server exited during start-up (log: $log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$log" >&2 2>/dev/null || true
            die "the server was not ready within ${timeout_s}s (pid $pid, log: $log)"
        fi
        sleep 0.05
    done
    echo "postgres ready on 127.0.0.1:$port (pid $pid, $dir)"
    dsn "$port"
}

cmd_stop() {
    local dir home
    dir="$(abs_dir "${1:-}")"
    home="$(home_of "$dir")"
    if [ -z "$home" ] || ! pid_alive "$home"; then
        echo "postgres not running ($dir)"
        return 0
    fi
    local pid
    pid="$(pid_of "$home")"
    kill -INT "$pid"  # fast shutdown: SIGTERM (smart) would wait for every client to leave
    local timeout_s="${PG_STOP_TIMEOUT_S:-60}" sent=INT
    local deadline=$((SECONDS + timeout_s))
    while proc_running "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            if [ "$sent" = INT ]; then
                note "pid $pid still running after ${timeout_s}s of fast shutdown: SIGQUIT"
                kill -QUIT "$pid" 2>/dev/null || true
                sent=QUIT
            else
                note "pid $pid still running after SIGQUIT: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            deadline=$((SECONDS + 10))
        fi
        sleep 0.05
    done
    echo "postgres stopped ($dir)"
}

cmd_status() {
    local dir home
    dir="$(abs_dir "${1:-}")"
    home="$(home_of "$dir")"
    if [ -n "$home" ] && pid_alive "$home"; then
        echo "postgres running (pid $(pid_of "$home"), $(dsn "$(port_of "$home")"), socket in" \
            "$home, $dir)"
    else
        echo "postgres not running ($dir)"
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
