#!/usr/bin/env bash
# Local Mosquitto + InfluxDB for development, tests, demo and bench.
#
#   scripts/services.sh start|stop|status          the services
#   scripts/services.sh browser|postgres|victoria|prometheus|systemd
#                                                  only install what those tests need
#
# Installs Debian's mosquitto (2.0.x) and influxdb (1.6.x) when missing, then runs one private
# instance of each, bound to 127.0.0.1 only, with all state under $GRIDGATE_RUN_DIR:
#
#   GRIDGATE_MQTT_PORT        MQTT listener            (default 18830)
#   GRIDGATE_INFLUX_PORT      InfluxDB HTTP API        (default 18086)
#   GRIDGATE_INFLUX_RPC_PORT  InfluxDB backup/RPC port (default 18088)
#   GRIDGATE_RUN_DIR          state dir                (default <repo>/.run)
#   GRIDGATE_BROKER_AUTH_CONF the mosquitto-auth.conf of gridgate broker-config: accounts and
#                             ACL instead of anonymous access (default: anonymous, loopback)
#
# It never touches the system services (default ports 1883/8086/8088), and `start` is idempotent
# and safe to call from several processes at once (e.g. pytest-xdist workers): start and stop run
# under an exclusive flock on $GRIDGATE_RUN_DIR/services.lock.
#
# Exit codes: 0 ok; 1 error; 2 usage; 3 (status only) at least one service is down.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MQTT_PORT="${GRIDGATE_MQTT_PORT:-18830}"
INFLUX_PORT="${GRIDGATE_INFLUX_PORT:-18086}"
INFLUX_RPC_PORT="${GRIDGATE_INFLUX_RPC_PORT:-18088}"
RUN_DIR="${GRIDGATE_RUN_DIR:-$REPO/.run}"
HOST=127.0.0.1
WAIT_SECS="${GRIDGATE_SERVICES_WAIT:-60}"

MQ_DIR="$RUN_DIR/mosquitto"
MQ_CONF="$MQ_DIR/mosquitto.conf"
MQ_PID="$MQ_DIR/mosquitto.pid"
MQ_LOG="$MQ_DIR/mosquitto.log"
MQ_DATA="$MQ_DIR/data"

IX_DIR="$RUN_DIR/influxdb"
IX_CONF="$IX_DIR/influxdb.conf"
IX_PID="$IX_DIR/influxd.pid"
IX_LOG="$IX_DIR/influxd.log"

LOCK_FILE="$RUN_DIR/services.lock"

# Never send loopback traffic through a proxy from the environment.
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export NO_PROXY="$no_proxy"

say() { echo "services: $*"; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

for _p in "$MQTT_PORT" "$INFLUX_PORT" "$INFLUX_RPC_PORT"; do
    if ! [[ "$_p" =~ ^[0-9]+$ ]] || ((_p < 1 || _p > 65535)); then die "invalid port '$_p'"; fi
done
[[ "$INFLUX_PORT" != "$INFLUX_RPC_PORT" && "$MQTT_PORT" != "$INFLUX_PORT" \
    && "$MQTT_PORT" != "$INFLUX_RPC_PORT" ]] \
    || die "GRIDGATE_MQTT_PORT, GRIDGATE_INFLUX_PORT and GRIDGATE_INFLUX_RPC_PORT must differ"

SUDO=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: cannot install packages"
    SUDO=(sudo -n)
fi

# ---------------------------------------------------------------------------------------------
# Binaries and installation
# ---------------------------------------------------------------------------------------------

find_bin() {  # find_bin NAME -> path or empty (sbin is often not on a non-root PATH)
    command -v "$1" 2>/dev/null || {
        local d
        for d in /usr/sbin /usr/bin /sbin /usr/local/sbin /usr/local/bin; do
            [[ -x "$d/$1" ]] && { echo "$d/$1"; return 0; }
        done
        return 0
    }
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
remove_policy_rc() {
    if ((POLICY_RC_OURS)); then
        "${SUDO[@]}" rm -f "$POLICY_RC" || true
        POLICY_RC_OURS=0
    fi
}
trap remove_policy_rc EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Pids of NAME started from the system-wide config (what a package's init script would run).
system_pids() {  # system_pids COMM
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == "$1" ]] || continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "/etc/$2" && echo "${p#/proc/}"
    done
    return 0
}

missing_packages() {  # the Debian packages the services need and this machine lacks
    [[ -n "$(find_bin mosquitto)" ]] || echo mosquitto
    [[ -n "$(find_bin mosquitto_sub)" ]] || echo mosquitto-clients
    [[ -n "$(find_bin influxd)" ]] || echo influxdb
    [[ -n "$(find_bin curl)" ]] || echo curl
    [[ -n "$(find_bin openssl)" ]] || echo openssl  # the TLS tests' throwaway CA
}

ensure_installed() {
    local -a missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]})) || return 0
    local before_mq before_ix
    before_mq="$(system_pids mosquitto mosquitto/)"
    before_ix="$(system_pids influxd influxdb/)"
    install_packages "${missing[@]}"

    # If the install started system daemons anyway (no policy-rc.d honoured), stop exactly
    # those: they were not running before and run from /etc/<pkg>/ configs.
    local pid
    for pid in $(system_pids mosquitto mosquitto/) $(system_pids influxd influxdb/); do
        if ! grep -qx "$pid" <<<"$before_mq"$'\n'"$before_ix"; then
            say "stopping system daemon pid $pid started by the package install"
            if [[ -d /run/systemd/system ]]; then
                "${SUDO[@]}" systemctl disable --now mosquitto influxdb >/dev/null 2>&1 || true
            fi
            "${SUDO[@]}" kill "$pid" 2>/dev/null || true
        fi
    done
    [[ -n "$(find_bin mosquitto)" && -n "$(find_bin influxd)" && -n "$(find_bin curl)" ]] \
        || die "packages installed but mosquitto/influxd/curl still not found"
}

# install_packages PKG... : Debian packages under the machine-wide install lock, with no
# daemon started by their install scripts (policy-rc.d says no while it runs).
install_packages() {
    command -v apt-get >/dev/null 2>&1 || die "missing $* and apt-get is not available"
    # Machine-wide lock (other checkouts/run dirs may install at the same time): nobody may
    # remove policy-rc.d while another install still relies on it.
    exec 8>>/tmp/gridgate-install.lock
    chmod 666 /tmp/gridgate-install.lock 2>/dev/null || true
    flock -w 900 8 || die "timed out waiting for /tmp/gridgate-install.lock"
    say "installing $* (apt-get)"
    # Keep the packages' init scripts from starting system daemons (1883, 8086, 5432 …).
    if [[ ! -e "$POLICY_RC" ]]; then
        printf '#!/bin/sh\n# temporary, from gridgate scripts/services.sh\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY_RC" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    local -a apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
        -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        "${apt[@]}" update -qq
    fi
    if ! "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null; then
        say "apt-get install failed; running apt-get update and retrying"
        "${apt[@]}" update -qq
        "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null \
            || die "apt-get install $* failed"
    fi
    remove_policy_rc
    exec 8>&-
}

# The browser tests' Chromium, its driver and CJK fonts (Debian's packages; no daemons).
ensure_browser() {
    local -a missing=()
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    pkg_installed fonts-noto-cjk || missing+=(fonts-noto-cjk)
    ((${#missing[@]})) || return 0
    install_packages "${missing[@]}"
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] \
        || die "packages installed but chromium/chromedriver still not found"
}

# VictoriaMetrics for the InfluxDB 2.x write tests (it serves /api/v2/write): each test module
# runs a private instance of its own (tests/support/victoria.py).
ensure_victoria() {
    [[ -n "$(find_bin victoria-metrics)" ]] && return 0
    install_packages victoria-metrics
    [[ -n "$(find_bin victoria-metrics)" ]] || die "victoria-metrics installed but not found"
}

# Prometheus and promtool for the test that scrapes gridgate and evaluates deploy/prometheus/
# (a private instance per test, tests/support/prometheus.py; the package's daemon never starts).
ensure_prometheus() {
    [[ -n "$(find_bin prometheus)" && -n "$(find_bin promtool)" ]] && return 0
    install_packages prometheus
    [[ -n "$(find_bin prometheus)" ]] || die "prometheus installed but not found"
}

# systemd-analyze, which checks the shipped units (deploy/systemd/) without running them.
ensure_systemd_analyze() {
    [[ -n "$(find_bin systemd-analyze)" ]] && return 0
    install_packages systemd
    [[ -n "$(find_bin systemd-analyze)" ]] || die "systemd installed but no systemd-analyze"
}

# PostgreSQL's server binaries for the tests that share state between gateway processes: each
# test process runs a private cluster of its own (tests/support/postgres.py), never the system's.
ensure_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
    install_packages postgresql
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
}

# ---------------------------------------------------------------------------------------------
# Process and port helpers
# ---------------------------------------------------------------------------------------------

# our_pid PIDFILE COMM CONF -> prints the pid if the file names a live COMM process started with
# our CONF (so a recycled pid, or the system daemon, is never mistaken for ours).
our_pid() {
    local pid
    [[ -r "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1" 2>/dev/null)" || return 1
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$3" || return 1
    echo "$pid"
}

port_in_use() {  # any listener on this TCP port (on any address) blocks 127.0.0.1:PORT
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
    fi
}

tcp_answers() { timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

influx_ping() {
    [[ "$(curl -s --noproxy '*' --max-time 3 -o /dev/null -w '%{http_code}' \
        "http://$HOST:$1/ping" 2>/dev/null)" == 204 ]]
}

require_free() {  # require_free PORT VARNAME WHAT
    if port_in_use "$1"; then
        die "port $1 on $HOST is in use by another program (wanted for $3); set $2 to a free port"
    fi
}

log_tail() {
    [[ -r "$1" ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n 25 "$1" >&2 || true
    echo "----" >&2
}

# Fail (and stop the process) if PID listens anywhere but loopback.
check_loopback_only() {  # check_loopback_only PID NAME
    local bad
    command -v ss >/dev/null 2>&1 || return 0
    bad="$({ ss -ltnpH; ss -lunpH; } 2>/dev/null | grep -F "pid=$1," \
        | awk '{print $4}' | grep -vE '^(127\.[0-9.]+|\[::1\]|::1):[0-9]+$' || true)"
    if [[ -n "$bad" ]]; then
        kill "$1" 2>/dev/null || true
        die "$2 (pid $1) listened on non-loopback address(es): ${bad//$'\n'/ }; stopped it"
    fi
}

# ---------------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------------

write_mosquitto_conf() {
    local user_line=""
    mkdir -p "$MQ_DATA"
    touch "$MQ_LOG"
    if ((EUID == 0)); then
        # As root, mosquitto 2.0 drops to user "mosquitto" (after opening its listener and log),
        # and then must still be able to write its persistence db and pid file.
        if id mosquitto >/dev/null 2>&1; then
            chown -R mosquitto: "$MQ_DIR"
            if ! runuser -u mosquitto -- test -w "$MQ_DATA" 2>/dev/null; then
                # e.g. the repo lives under /root (mode 700): stay root rather than fail.
                user_line="user root"
            fi
        else
            user_line="user root"
        fi
    fi
    # Anonymous on loopback for the demo and the tests; with GRIDGATE_BROKER_AUTH_CONF (the
    # mosquitto-auth.conf that gridgate broker-config writes) accounts and the ACL instead.
    local access_lines="allow_anonymous true"
    if [[ -n "${GRIDGATE_BROKER_AUTH_CONF:-}" ]]; then
        [[ -r "$GRIDGATE_BROKER_AUTH_CONF" ]] ||
            die "GRIDGATE_BROKER_AUTH_CONF=$GRIDGATE_BROKER_AUTH_CONF is not a readable file" \
                "(make it with: gridgate broker-config --out DIR)"
        # its access lines; persistence is set below already (a repeated option is an error)
        access_lines="$(grep -E '^(allow_anonymous|password_file|acl_file|use_username_as_clientid) ' \
            "$GRIDGATE_BROKER_AUTH_CONF")"
        # its password file is 0600 for whoever generated it: a broker that dropped to user
        # mosquitto could not read it
        ((EUID == 0)) && user_line="user root"
    fi
    cat >"$MQ_CONF" <<EOF
# Generated by scripts/services.sh on every start; edits are overwritten.
pid_file $MQ_PID
${user_line}

# Loopback only; no default listener in mosquitto 2.x once a listener is given.
listener $MQTT_PORT $HOST
${access_lines}

persistence true
persistence_location $MQ_DATA/
# Mosquitto has no write-ahead log: it snapshots its whole database. Every 60 s (the old
# setting) a SIGKILL lost every acknowledged message of the last minute (bench: 300,000 of
# 300,000); every 1000 changes it lost 2, at 0.83x the publish rate with a 100k backlog and
# 0.48x with 300k (each save writes the whole queue) - far above a community's real rate.
# Measured by: python -m bench.broker_persistence
autosave_on_changes true
autosave_interval 1000
persistent_client_expiration 7d

# Queue for offline / slow persistent (clean_session=false) subscribers. The default of 1000
# silently drops the backlog of a slow gateway; 0 bytes = no byte limit.
max_queued_messages 1000000
max_queued_bytes 0

# A device reading is a few hundred bytes; the gateway dead-letters any payload over 64 KiB as
# "oversize" (adapters/base.py MAX_PAYLOAD_BYTES), so one between the two is still seen and
# counted. Beyond 256 KiB the broker refuses it itself, before it can fill the memory of the
# broker, the gateway or a persistent session's queue (a burst of 1 MB junk: issue 14). v3.1.1
# publishers are not told; MQTT v5 publishers get a reason code; the broker does not forward it.
message_size_limit 262144

# The gateway acks (PUBACK) a QoS 1 message only after its batch has been written to InfluxDB,
# so the broker's in-flight window per client must be >= the gateway's batch size, or delivery
# stalls until a batch timeout. Keep this >= the gateway batch size if either changes.
max_inflight_messages 10000
max_inflight_bytes 0

log_dest file $MQ_LOG
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
    chmod 644 "$MQ_CONF"
}

start_mosquitto() {
    local pid bin
    if pid="$(our_pid "$MQ_PID" mosquitto "$MQ_CONF")"; then
        check_running_port "$MQ_CONF" "listener $MQTT_PORT " mosquitto "$pid" GRIDGATE_MQTT_PORT
        wait_mosquitto "$pid"
        say "mosquitto already running on $HOST:$MQTT_PORT (pid $pid)"
        return 0
    fi
    rm -f "$MQ_PID"
    require_free "$MQTT_PORT" GRIDGATE_MQTT_PORT mosquitto
    bin="$(find_bin mosquitto)"
    write_mosquitto_conf
    # 9>&-: the daemon must not inherit our lock fd (it would hold the lock forever).
    "$bin" -c "$MQ_CONF" -d </dev/null >>"$MQ_LOG" 2>&1 8>&- 9>&- || {
        log_tail "$MQ_LOG"
        die "mosquitto failed to start"
    }
    local i
    for ((i = 0; i < 50; i++)); do
        pid="$(our_pid "$MQ_PID" mosquitto "$MQ_CONF")" && break
        sleep 0.1
    done
    [[ -n "${pid:-}" ]] || { log_tail "$MQ_LOG"; die "mosquitto exited right after starting"; }
    wait_mosquitto "$pid"
    check_loopback_only "$pid" mosquitto
    say "mosquitto up on $HOST:$MQTT_PORT (pid $pid)"
}

wait_mosquitto() {
    local pid="$1" deadline=$((SECONDS + WAIT_SECS))
    until tcp_answers "$MQTT_PORT"; do
        [[ -d "/proc/$pid" ]] || { log_tail "$MQ_LOG"; die "mosquitto (pid $pid) died"; }
        ((SECONDS < deadline)) || {
            log_tail "$MQ_LOG"
            die "mosquitto (pid $pid) not answering on $HOST:$MQTT_PORT after ${WAIT_SECS}s"
        }
        sleep 0.2
    done
}

# A running instance started with other ports than the ones asked for now is an error.
check_running_port() {  # CONF NEEDLE NAME PID VAR
    if ! grep -qF -- "$2" "$1" 2>/dev/null; then
        die "$3 is already running (pid $4) with other ports than requested ($1);" \
            "run '$0 stop' first or unset/fix $5"
    fi
}

# ---------------------------------------------------------------------------------------------
# InfluxDB 1.6
# ---------------------------------------------------------------------------------------------

write_influx_conf() {
    mkdir -p "$IX_DIR/meta" "$IX_DIR/data" "$IX_DIR/wal"
    cat >"$IX_CONF" <<EOF
# Generated by scripts/services.sh on every start; edits are overwritten.
# Every listener is on 127.0.0.1; every optional listener is disabled.
reporting-disabled = true
bind-address = "$HOST:$INFLUX_RPC_PORT"

[meta]
  dir = "$IX_DIR/meta"
  logging-enabled = false

[data]
  dir = "$IX_DIR/data"
  wal-dir = "$IX_DIR/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = true

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "$HOST:$INFLUX_PORT"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  https-enabled = false

# 1.6 ships the IFQL (Flux preview) service, which otherwise listens on *:8082.
[ifql]
  enabled = false
  bind-address = "$HOST:8082"

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
EOF
}

start_influxd() {
    local pid bin
    if pid="$(our_pid "$IX_PID" influxd "$IX_CONF")"; then
        check_running_port "$IX_CONF" "bind-address = \"$HOST:$INFLUX_PORT\"" influxd "$pid" \
            GRIDGATE_INFLUX_PORT
        check_running_port "$IX_CONF" "bind-address = \"$HOST:$INFLUX_RPC_PORT\"" influxd "$pid" \
            GRIDGATE_INFLUX_RPC_PORT
        wait_influxd "$pid"
        say "influxd already running on $HOST:$INFLUX_PORT (pid $pid)"
        return 0
    fi
    rm -f "$IX_PID"
    require_free "$INFLUX_PORT" GRIDGATE_INFLUX_PORT "influxd HTTP"
    require_free "$INFLUX_RPC_PORT" GRIDGATE_INFLUX_RPC_PORT "influxd RPC"
    bin="$(find_bin influxd)"
    write_influx_conf
    : >>"$IX_LOG"
    echo "==== $(date -Is) starting influxd" >>"$IX_LOG"
    # setsid + nohup: detached from our session/terminal; 9>&-: must not inherit the lock fd.
    nohup setsid "$bin" run -config "$IX_CONF" -pidfile "$IX_PID" \
        </dev/null >>"$IX_LOG" 2>&1 8>&- 9>&- &
    local launcher=$! i
    for ((i = 0; i < 100; i++)); do
        pid="$(our_pid "$IX_PID" influxd "$IX_CONF")" && break
        # influxd writes its pid file itself; fall back to the launched pid (setsid execs).
        if [[ "$(cat "/proc/$launcher/comm" 2>/dev/null)" == influxd ]]; then
            pid=$launcher
            echo "$pid" >"$IX_PID"
            break
        fi
        sleep 0.1
    done
    [[ -n "${pid:-}" ]] || { log_tail "$IX_LOG"; die "influxd exited right after starting"; }
    wait_influxd "$pid"
    check_loopback_only "$pid" influxd
    say "influxd up on $HOST:$INFLUX_PORT (rpc $HOST:$INFLUX_RPC_PORT) (pid $pid)"
}

wait_influxd() {
    local pid="$1" deadline=$((SECONDS + WAIT_SECS))
    until influx_ping "$INFLUX_PORT"; do
        [[ -d "/proc/$pid" ]] || { log_tail "$IX_LOG"; die "influxd (pid $pid) died"; }
        ((SECONDS < deadline)) || {
            log_tail "$IX_LOG"
            die "influxd (pid $pid) not answering http://$HOST:$INFLUX_PORT/ping after ${WAIT_SECS}s"
        }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# stop / status
# ---------------------------------------------------------------------------------------------

stop_one() {  # stop_one NAME PIDFILE COMM CONF
    local pid i
    if ! pid="$(our_pid "$2" "$3" "$4")"; then
        rm -f "$2"
        say "$1 not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
        say "$1 (pid $pid) ignored SIGTERM for 15s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
    fi
    [[ -d "/proc/$pid" ]] && die "$1 (pid $pid) did not exit"
    rm -f "$2"
    say "$1 stopped (pid $pid)"
}

status() {
    local rc=0 pid
    if pid="$(our_pid "$MQ_PID" mosquitto "$MQ_CONF")" && tcp_answers "$MQTT_PORT"; then
        say "mosquitto up on $HOST:$MQTT_PORT (pid $pid)"
    elif [[ -n "${pid:-}" ]]; then
        say "mosquitto down: pid $pid is running but $HOST:$MQTT_PORT does not answer"; rc=3
    else
        say "mosquitto down (port $MQTT_PORT)"; rc=3
    fi
    pid=""
    if pid="$(our_pid "$IX_PID" influxd "$IX_CONF")" && influx_ping "$INFLUX_PORT"; then
        say "influxd up on $HOST:$INFLUX_PORT (rpc $HOST:$INFLUX_RPC_PORT) (pid $pid)"
    elif [[ -n "${pid:-}" ]]; then
        say "influxd down: pid $pid is running but http://$HOST:$INFLUX_PORT/ping does not answer"
        rc=3
    else
        say "influxd down (port $INFLUX_PORT)"; rc=3
    fi
    return "$rc"
}

lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -n 9; then
        say "waiting for another services.sh (lock $LOCK_FILE)"
        flock -w 900 9 || die "timed out waiting for $LOCK_FILE"
    fi
}

case "${1:-}" in
    start)
        lock
        ensure_installed
        start_mosquitto
        start_influxd
        ;;
    stop)
        lock
        stop_one mosquitto "$MQ_PID" mosquitto "$MQ_CONF"
        stop_one influxd "$IX_PID" influxd "$IX_CONF"
        ;;
    status)
        status || exit $?
        ;;
    browser)
        ensure_browser
        ;;
    postgres)
        ensure_postgres
        ;;
    victoria)
        ensure_victoria
        ;;
    prometheus)
        ensure_prometheus
        ;;
    systemd)
        ensure_systemd_analyze
        ;;
    *)
        echo "usage: $0 start|stop|status|browser|postgres|victoria|prometheus|systemd" >&2
        exit 2
        ;;
esac
