#!/usr/bin/env bash
# A one-node Ray cluster on 127.0.0.1 for development: start | stop | status | env.
#
# What it owns: one state folder (default <repo>/.ray-local, or $RAYDISTILL_RAY_STATE) holding
#   auth_token   the cluster's token (mode 600, made once, never printed)
#   ray/         Ray's --temp-dir (sessions, logs, sockets), so nothing lands in /tmp/ray
#   pids         "PID STARTTIME NAME" of every process this script started (and their children)
#   env          the exports a client needs (address, auth mode, token *path*)
#   address, mode, dashboard, start.log
#
# Network: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray in single-machine mode, so the GCS,
# raylet, object manager and agents all listen on 127.0.0.1 (without it Ray swaps 127.0.0.1 for
# the routable address and the GCS listens on every interface). Clients need the same variable:
# without it `ray.init(address="127.0.0.1:P")` resolves 127.0.0.1 to the routable address and
# waits forever. `source <state>/env` sets it.
#
# Auth: token auth stays on (Ray 2.60's default for new local clusters). The token lives in
# <state>/auth_token and clients point RAY_AUTH_TOKEN_PATH at it. `start --no-auth` starts with
# RAY_AUTH_MODE=disabled instead (any local process may then use the cluster) and says so.
#
# Stopping: only the recorded PIDs, checked against their start time so a reused PID is never
# signalled; raylets first, then the other daemons, then the GCS. Never `ray stop`, which would
# stop every Ray on the machine.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
STATE="${RAYDISTILL_RAY_STATE:-$REPO_ROOT/.ray-local}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
# Unix socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay under 108 bytes.
MAX_TEMP_DIR_LEN=44

usage() {
    cat <<'EOF'
usage: scripts/local_cluster.sh start [--port P] [--dashboard-port P] [--num-cpus N] [--num-gpus N]
                                      [--no-auth] [-- EXTRA_RAY_START_ARGS...]
       scripts/local_cluster.sh stop
       scripts/local_cluster.sh status      exit 0 up, 3 down, 1 half up (stale processes)
       scripts/local_cluster.sh env         the exports a client needs (no secrets)
state folder: $RAYDISTILL_RAY_STATE (default <repo>/.ray-local); Python: $PYTHON
EOF
}

die() { echo "local_cluster: error: $*" >&2; exit 2; }
say() { echo "local_cluster: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

find_ray() {
    [[ -n "$PYTHON" ]] || die "no python3 on PATH; set PYTHON=/path/to/venv/bin/python"
    RAY="${RAY:-$(dirname "$PYTHON")/ray}"
    [[ -x "$RAY" ]] || RAY="$(command -v ray || true)"
    [[ -n "$RAY" ]] || die "no 'ray' next to $PYTHON or on PATH; pip install 'raydistill[cluster]'"
}

# Field 22 of /proc/PID/stat (start time in clock ticks since boot); empty if PID is gone.
proc_start() {
    local stat rest
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    echo "${20}"
}

proc_name() { tr -d '\n' <"/proc/$1/comm" 2>/dev/null || true; }

# PIDs in our private session (`ray start` runs under setsid, and the daemons it spawns keep that
# session id; the raylet's workers and agents too) plus any descendants of those. A session id
# cannot be handed to a new process while a member of the session is alive.
scan_pids() {
    local sid="$1" d pid stat rest
    declare -A parent=() mine=()
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        stat="$(cat "$d/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"
        # shellcheck disable=SC2086
        set -- $rest
        parent[$pid]="$2"
        [[ "$4" == "$sid" ]] && mine[$pid]=1
    done
    local changed=1
    while ((changed)); do
        changed=0
        for pid in "${!parent[@]}"; do
            if [[ -z "${mine[$pid]:-}" && -n "${mine[${parent[$pid]}]:-}" ]]; then
                mine[$pid]=1
                changed=1
            fi
        done
    done
    for pid in "${!mine[@]}"; do echo "$pid"; done | sort -n
}

# Append newly seen processes of our cluster to the pids file (workers start after `ray start`).
record_pids() {
    local sid="$1" pid start
    touch "$STATE/pids"
    while read -r pid; do
        [[ -n "$pid" ]] || continue
        grep -q "^$pid " "$STATE/pids" && continue
        start="$(proc_start "$pid")"
        [[ -n "$start" ]] && echo "$pid $start $(proc_name "$pid")" >>"$STATE/pids"
    done < <(scan_pids "$sid")
    return 0
}

# Recorded PIDs that are still the same process (same start time).
live_pids() {
    local pid start name
    [[ -f "$STATE/pids" ]] || return 0
    while read -r pid start name; do
        [[ -n "$pid" && "$(proc_start "$pid")" == "$start" ]] && echo "$pid $name"
    done <"$STATE/pids"
    return 0
}

temp_dir_for_state() {
    local t="$STATE/ray"
    if ((${#t} > MAX_TEMP_DIR_LEN)); then
        # A deep checkout would overflow the socket path limit: use a short private folder
        # named after the state folder instead (still ours alone, still recorded in state).
        t="/tmp/rdl-$(id -u)-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
    fi
    echo "$t"
}

have_dashboard_deps() { "$PYTHON" -c 'import ray.dashboard.optional_deps' >/dev/null 2>&1; }

ensure_token() {
    if [[ ! -s "$STATE/auth_token" ]]; then
        (umask 077 && "$PYTHON" -c 'import secrets, sys; sys.stdout.write(secrets.token_hex(32))' \
            >"$STATE/auth_token")
    fi
    chmod 600 "$STATE/auth_token"
}

write_env() {
    local port="$1" mode="$2" dash="$3"
    {
        echo "# source this file to use the local Ray cluster (scripts/local_cluster.sh)"
        echo "export RAY_ADDRESS=127.0.0.1:$port"
        echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
        echo "export RAY_AUTH_MODE=$mode"
        if [[ "$mode" == token ]]; then
            printf 'export RAY_AUTH_TOKEN_PATH=%q\n' "$STATE/auth_token"
        fi
        if [[ "$dash" != off ]]; then
            echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dash"
        fi
    } >"$STATE/env"
}

cluster_up() { [[ -f "$STATE/address" ]] && [[ -n "$(live_pids)" ]]; }

start_cluster() {
    local port=6379 dash_port=8265 num_cpus="" num_gpus="" mode=token
    local -a extra=()
    while (($#)); do
        case "$1" in
            --port) port="${2:?--port needs a value}"; shift 2 ;;
            --dashboard-port) dash_port="${2:?--dashboard-port needs a value}"; shift 2 ;;
            --num-cpus) num_cpus="${2:?--num-cpus needs a value}"; shift 2 ;;
            --num-gpus) num_gpus="${2:?--num-gpus needs a value}"; shift 2 ;;
            --no-auth) mode=disabled; shift ;;
            --) shift; extra=("$@"); break ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown start option '$1' (valid: --port --dashboard-port --num-cpus --num-gpus --no-auth --)" ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] || die "--port '$port' is not a port number"
    find_ray
    mkdir -p "$STATE"
    # The state folder holds a token and logs: keep it out of git wherever it lives.
    [[ -f "$STATE/.gitignore" ]] || echo '*' >"$STATE/.gitignore"
    if cluster_up; then
        say "already running at $(cat "$STATE/address") (scripts/local_cluster.sh stop first to restart)"
        return 0
    fi
    # Processes of an earlier start that never finished: keep their record, stop them first.
    [[ -z "$(live_pids)" ]] || die "processes of an earlier start are still alive; run: scripts/local_cluster.sh stop"
    rm -f "$STATE/pids" "$STATE/address" "$STATE/env"
    local temp_dir
    temp_dir="$(temp_dir_for_state)"
    mkdir -p "$temp_dir"
    echo "$temp_dir" >"$STATE/temp_dir"

    local -a args=(start --head --node-ip-address=127.0.0.1 --port="$port" --temp-dir="$temp_dir"
        --disable-usage-stats)
    [[ -n "$num_cpus" ]] && args+=(--num-cpus="$num_cpus")
    [[ -n "$num_gpus" ]] && args+=(--num-gpus="$num_gpus")
    local dash=off
    if have_dashboard_deps; then
        dash="$dash_port"
        args+=(--include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash_port")
    else
        # ray[tune] alone: --include-dashboard=true fails and leaves processes behind.
        args+=(--include-dashboard=false)
        say "ray[default] not installed: no dashboard, no 'ray job submit' (pip install 'raydistill[cluster]')"
    fi
    args+=("${extra[@]}")

    local -a env_args=(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE="$mode")
    if [[ "$mode" == token ]]; then
        ensure_token
        env_args+=(RAY_AUTH_TOKEN_PATH="$STATE/auth_token")
    fi
    local t0 rc=0 sid
    t0="$(now)"
    # setsid: `ray start` and every daemon it leaves behind share a new session whose id is the
    # PID written to $STATE/sid; that is how stop finds exactly our processes.
    # -u RAY_AUTH_TOKEN: a token for some other cluster in the caller's env would win over ours.
    rm -f "$STATE/sid"
    setsid -w env -u RAY_AUTH_TOKEN -u RAY_ADDRESS "${env_args[@]}" \
        bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$STATE/sid" "$RAY" "${args[@]}" \
        >"$STATE/start.log" 2>&1 || rc=$?
    sid="$(cat "$STATE/sid" 2>/dev/null || true)"
    [[ -n "$sid" ]] || die "could not start ray under setsid (see $STATE/start.log)"
    record_pids "$sid"
    if ((rc != 0)); then
        echo "local_cluster: error: ray start failed (exit $rc); last lines of $STATE/start.log:" >&2
        tail -n 15 "$STATE/start.log" >&2
        stop_cluster >/dev/null || true
        exit 1
    fi
    echo "127.0.0.1:$port" >"$STATE/address"
    echo "$mode" >"$STATE/mode"
    echo "$dash" >"$STATE/dashboard"
    write_env "$port" "$mode" "$dash"
    say "started in $(elapsed "$t0") s: 127.0.0.1:$port, $(live_pids | wc -l) processes, temp dir $temp_dir"
    if [[ "$mode" == token ]]; then
        say "auth: token (file $STATE/auth_token, mode 600); clients: source $STATE/env"
    else
        say "auth: DISABLED (RAY_AUTH_MODE=disabled): any local process can use this cluster; dev only"
        say "clients: source $STATE/env"
    fi
    [[ "$dash" != off ]] && say "dashboard: http://127.0.0.1:$dash (127.0.0.1 only)"
    return 0
}

# SIGTERM the given "pid name" lines, then wait up to $2 s for them to go.
term_and_wait() {
    local lines="$1" wait_s="$2" pid name deadline
    [[ -n "$lines" ]] || return 0
    while read -r pid name; do kill -TERM "$pid" 2>/dev/null || true; done <<<"$lines"
    deadline=$((SECONDS + wait_s))
    while ((SECONDS < deadline)); do
        local alive=0
        while read -r pid name; do [[ -d "/proc/$pid" ]] && alive=1; done <<<"$lines"
        ((alive)) || return 0
        sleep 0.2
    done
}

stop_cluster() {
    if [[ ! -f "$STATE/pids" ]]; then
        rm -f "$STATE/address" "$STATE/env" "$STATE/dashboard" "$STATE/mode"
        say "not running (no $STATE/pids)"
        return 0
    fi
    local t0 temp_dir sid
    t0="$(now)"
    temp_dir="$(cat "$STATE/temp_dir" 2>/dev/null || true)"
    sid="$(cat "$STATE/sid" 2>/dev/null || true)"
    # Workers and agents the raylet started after `start` are ours too: record them first.
    [[ -n "$sid" && -n "$(live_pids)" ]] && record_pids "$sid"
    local live raylets others gcs
    live="$(live_pids)"
    raylets="$(grep -E ' raylet$' <<<"$live" || true)"
    gcs="$(grep -E ' gcs_server$' <<<"$live" || true)"
    others="$(grep -vE ' (raylet|gcs_server)$' <<<"$live" || true)"
    term_and_wait "$raylets" 10
    term_and_wait "$others" 10
    term_and_wait "$gcs" 10
    local left
    left="$(live_pids)"
    if [[ -n "$left" ]]; then
        # Still there after SIGTERM + 30 s: these are verified to be ours, so SIGKILL them.
        while read -r pid name; do kill -KILL "$pid" 2>/dev/null || true; done <<<"$left"
        sleep 0.5
    fi
    left="$(live_pids)"
    local n
    n="$(wc -l <"$STATE/pids")"
    rm -f "$STATE/address" "$STATE/env" "$STATE/dashboard" "$STATE/mode"
    [[ -n "$temp_dir" ]] && rm -f "$temp_dir/ray_current_cluster"
    if [[ -n "$left" ]]; then
        echo "local_cluster: error: still alive after SIGKILL: $(tr '\n' ' ' <<<"$left")" >&2
        return 1
    fi
    mv "$STATE/pids" "$STATE/pids.stopped"
    say "stopped in $(elapsed "$t0") s: $n recorded processes gone"
}

status_cluster() {
    local live n_live n_rec addr
    live="$(live_pids)"
    n_live=$(grep -c . <<<"$live" || true)
    if [[ ! -f "$STATE/address" ]]; then
        if ((n_live > 0)); then
            say "half up: $n_live recorded processes alive but no address; run stop"
            return 1
        fi
        say "down (state $STATE)"
        return 3
    fi
    addr="$(cat "$STATE/address")"
    n_rec="$(wc -l 2>/dev/null <"$STATE/pids" || echo 0)"
    local gcs_alive=0
    grep -qE ' gcs_server$' <<<"$live" && gcs_alive=1
    if ((gcs_alive)) && (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
        say "up: $addr ($n_live of $n_rec recorded processes alive), auth $(cat "$STATE/mode" 2>/dev/null || echo '?'), dashboard $(cat "$STATE/dashboard" 2>/dev/null || echo off)"
        say "clients: source $STATE/env"
        return 0
    fi
    say "half up: $addr not answering ($n_live of $n_rec recorded processes alive); run stop"
    return 1
}

main() {
    local cmd="${1:-}"
    (($#)) && shift
    case "$cmd" in
        start) start_cluster "$@" ;;
        stop) stop_cluster ;;
        status) status_cluster ;;
        env) [[ -f "$STATE/env" ]] && cat "$STATE/env" || die "not running (no $STATE/env)" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
