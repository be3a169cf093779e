#!/usr/bin/env bash
# Local Kafka (KRaft, single node), Redis and an MQTT broker (mosquitto) for development and tests.
#   services.sh up | down | status | start-redis | stop-redis | start-kafka | stop-kafka
#               | start-mqtt | stop-mqtt
#   KAFKA_NODES=3 services.sh up: a 3-broker cluster with SASL/SCRAM and ACLs (kafka_cluster.sh),
#     and Redis with one ACL user per component (redis_acl.py), `default` off
#   services.sh redis-env: where the Redis users' passwords are (VIGIL_REDIS_* exports)
# Everything lives in the throw-away state dir ${VIGIL_STATE:-<repo>/.vigil}; both services bind
# to 127.0.0.1 only. `up` is idempotent: healthy running services are left alone.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${VIGIL_STATE:-$REPO/.vigil}"
PYTHON="${PYTHON:-python3}"
REDIS_PORT="${VIGIL_REDIS_PORT:-6379}"
MQTT_PORT="${VIGIL_MQTT_PORT:-1883}"
KAFKA_PORT="${VIGIL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${VIGIL_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_VERSION="${VIGIL_KAFKA_VERSION:-4.1.1}"
KAFKA_LIBS="${VIGIL_CACHE:-$HOME/.cache/vigil}/kafka-$KAFKA_VERSION/libs"
KAFKA_HEAP="${VIGIL_KAFKA_HEAP:--Xms256m -Xmx512m}"
START_TIMEOUT="${VIGIL_START_TIMEOUT:-90}"   # seconds per service

R="$STATE/redis"    # redis.pid, redis.log, data/; ACL profile: users.acl, acl.on, secrets/<user>
K="$STATE/kafka"    # kafka.pid, cluster.id, server.properties, data/, logs/
M="$STATE/mqtt"     # mosquitto.pid, mosquitto.conf, mosquitto.log

# Messages never abort the script: `down` must finish even when our stdout is a closed pipe.
say() { echo "services: $*" 2>/dev/null || true; }
die() { echo "services: ERROR: $*" >&2 2>/dev/null || true; exit 1; }

# pid from a pidfile, only if that process is alive and really is the expected program
# (guards against a stale pidfile whose pid was reused).
live_pid() {  # pidfile pattern
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" \
    && echo "$pid"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
show_log() { echo "---- last lines of $1 ----" >&2; tail -n "${2:-40}" "$1" >&2 2>/dev/null || true; echo "----" >&2; }

stop_pid() {  # pidfile pattern name: SIGTERM, wait, then SIGKILL
  local pid i
  pid="$(live_pid "$1" "$2")" || { rm -f "$1"; return 0; }
  say "stopping $3 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$3 did not stop in 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}

# --- Redis --------------------------------------------------------------------------------------
# The cluster profile (KAFKA_NODES=3, or VIGIL_REDIS_ACL=1) starts Redis with an ACL file: one user
# per component with only its keys and commands, `default` off (redis_acl.py). Passwords: random,
# once per state dir, in $R/secrets/<user> (mode 600), like the Kafka cluster's SCRAM passwords.
REDIS_USERS=(ingest alerts console notifier models recorder)

# Health: PING answered; with ACLs as the notifier (read-only), password from its file via the
# environment (never the command line). acl.on says which way the running server was started.
redis_ok() {
  if [ -f "$R/acl.on" ]; then
    [ "$(REDISCLI_AUTH="$(cat "$R/secrets/notifier" 2>/dev/null)" redis-cli --no-auth-warning \
      --user notifier -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  else
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
  fi
}

redis_secrets() {  # random passwords, once per state dir
  mkdir -p "$R/secrets"; chmod 700 "$R/secrets"
  local u
  for u in "${REDIS_USERS[@]}"; do
    [ -s "$R/secrets/$u" ] || (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))' >"$R/secrets/$u")
  done
}

start_redis() {
  local want=0 running=0 pid
  [ "$REDIS_ACL" = 1 ] && want=1
  [ -f "$R/acl.on" ] && running=1
  if pid="$(live_pid "$R/redis.pid" redis-server)"; then
    if [ "$want" != "$running" ]; then
      die "redis (pid $pid) runs $([ "$running" = 1 ] && echo with || echo without) ACL users, this profile wants $([ "$want" = 1 ] && echo them || echo none); run \`$0 stop-redis\` first"
    fi
    redis_ok && { say "redis already running on 127.0.0.1:$REDIS_PORT"; return 0; }
  fi
  command -v redis-server >/dev/null || die "redis-server not installed (run deploy/local/setup.sh)"
  port_open "$REDIS_PORT" && ! live_pid "$R/redis.pid" redis-server >/dev/null \
    && die "port $REDIS_PORT is taken by another process; stop it or set VIGIL_REDIS_PORT"
  mkdir -p "$R/data"
  local acl=()
  rm -f "$R/acl.on"
  if [ "$want" = 1 ]; then
    redis_secrets
    "$PYTHON" "$REPO/deploy/local/redis_acl.py" --secrets "$R/secrets" --out "$R/users.acl" \
      --prefix "${VIGIL_REDIS_KEY_PREFIX:-vigil:}" || die "could not write the Redis ACL file"
    acl=(--aclfile "$R/users.acl")
    touch "$R/acl.on"
  fi
  # No persistence: the data is throw-away. Daemonized, so redis writes its own pidfile.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --daemonize yes --pidfile "$R/redis.pid" --logfile "$R/redis.log" --dir "$R/data" \
    --save "" --appendonly no "${acl[@]}" >/dev/null || { show_log "$R/redis.log"; die "redis-server failed to start"; }
  local i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    redis_ok && { say "redis up on 127.0.0.1:$REDIS_PORT$([ "$want" = 1 ] && echo " (ACL users ${REDIS_USERS[*]}; default off)")"; return 0; }
    sleep 0.1
  done
  show_log "$R/redis.log"; die "redis did not answer PING within ${START_TIMEOUT}s"
}
stop_redis() { stop_pid "$R/redis.pid" redis-server redis; rm -f "$R/acl.on"; }

redis_env() {  # the Redis users' password files, for a config's redis.users (docs/redis.md)
  redis_secrets
  local u up
  echo "export VIGIL_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
  for u in "${REDIS_USERS[@]}"; do
    up="$(echo "$u" | tr '[:lower:]' '[:upper:]')"
    echo "export VIGIL_REDIS_${up}_PASSWORD_FILE=$R/secrets/$u"
  done
}

# --- MQTT (mosquitto) ---------------------------------------------------------------------------
# Healthy = a QoS 1 publish acknowledged by the broker (mosquitto_pub), else the port answering.
mqtt_ok() {
  if command -v mosquitto_pub >/dev/null; then
    timeout 5 mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i vigil-healthcheck -q 1 \
      -t vigil-healthcheck -m ok >/dev/null 2>&1
  else
    port_open "$MQTT_PORT"
  fi
}

start_mqtt() {
  if live_pid "$M/mosquitto.pid" mosquitto >/dev/null && mqtt_ok; then
    say "mqtt already running on 127.0.0.1:$MQTT_PORT"; return 0
  fi
  command -v mosquitto >/dev/null || die "mosquitto not installed (run deploy/local/setup.sh)"
  port_open "$MQTT_PORT" && ! live_pid "$M/mosquitto.pid" mosquitto >/dev/null \
    && die "port $MQTT_PORT is taken by another process; stop it or set VIGIL_MQTT_PORT"
  mkdir -p "$M"
  # 127.0.0.1 only, anonymous (nothing else can reach it), no persistence: retained messages
  # are throw-away like the rest. `user`: stay the invoking user (root would switch to the
  # `mosquitto` user, which cannot write the log here).
  cat >"$M/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
log_dest file $M/mosquitto.log
log_type error
log_type warning
log_type notice
connection_messages false
# acknowledgements go out at once, not held back by Nagle's algorithm (~40 ms per QoS 1 publish)
set_tcp_nodelay true
CONF
  # setsid: its own session, so Ctrl-C in the terminal that ran `up` leaves it alone.
  setsid mosquitto -c "$M/mosquitto.conf" >>"$M/mosquitto.out" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$M/mosquitto.pid"
  local i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    # alive, not live_pid: until the forked shell has exec'd, its command line is not mosquitto's
    kill -0 "$pid" 2>/dev/null || break
    mqtt_ok && { say "mqtt up on 127.0.0.1:$MQTT_PORT"; return 0; }
    sleep 0.1
  done
  show_log "$M/mosquitto.out"; show_log "$M/mosquitto.log"
  die "mosquitto did not accept a publish within ${START_TIMEOUT}s"
}
stop_mqtt() { stop_pid "$M/mosquitto.pid" mosquitto mqtt; }

# --- Kafka --------------------------------------------------------------------------------------
# Healthy = a real metadata round trip with the same client library the pipeline uses.
kafka_wait() {  # pid timeout_s
  "$PYTHON" - "$KAFKA_PORT" "$1" "$2" <<'PY'
import logging, os, sys, time
logging.disable(logging.CRITICAL)  # kafka-python logs every refused connection while we poll
from kafka import KafkaAdminClient
port, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
last = None
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the Kafka process exited")
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000,
                                 client_id="vigil-healthcheck")
        try:
            admin.list_topics()
            sys.exit(0)
        finally:
            admin.close()
    except Exception as exc:  # NoBrokersAvailable, timeouts while the controller elects itself
        last = exc
        time.sleep(0.5)
sys.exit(f"no metadata answer in time (last error: {last!r})")
PY
}

start_kafka() {
  local pid
  if pid="$(live_pid "$K/kafka.pid" kafka.Kafka)"; then
    # Running: already healthy, or still starting (another `up` in flight) — wait either way.
    kafka_wait "$pid" "$START_TIMEOUT" || { show_log "$K/logs/server.log"; die "Kafka (pid $pid) is running but not healthy"; }
    say "kafka already running on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Kafka jars missing in $KAFKA_LIBS (run deploy/local/setup.sh)"
  command -v java >/dev/null || die "java not installed (run deploy/local/setup.sh)"
  local p
  for p in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
    port_open "$p" && die "port $p is taken by another process; stop it or set VIGIL_KAFKA_PORT / VIGIL_KAFKA_CONTROLLER_PORT"
  done
  mkdir -p "$K/logs" "$K/data"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$K/data|g" \
    "$REPO/deploy/local/kafka/server.properties" >"$K/server.properties"

  local heap java_opts
  read -ra heap <<<"$KAFKA_HEAP"
  java_opts=(-cp "$KAFKA_LIBS/*" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
    -Dkafka.logs.dir="$K/logs" -Dlog4j2.configurationFile="$REPO/deploy/local/kafka/log4j2.properties")

  # KRaft needs its storage formatted once with a cluster id; the id is generated once per state
  # dir and reused, the data dir is re-formatted after `down` deleted it.
  if [ ! -f "$K/data/meta.properties" ]; then
    if [ ! -s "$K/cluster.id" ]; then
      local id
      if ! id="$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>>"$K/logs/format.log")" || [ -z "$id" ]; then
        show_log "$K/logs/format.log"; die "could not generate a Kafka cluster id (java failed: ${id:-no output})"
      fi
      echo "$id" >"$K/cluster.id"
    fi
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$(cat "$K/cluster.id")" -c "$K/server.properties" \
      >>"$K/logs/format.log" 2>&1 || { show_log "$K/logs/format.log"; die "formatting Kafka storage failed"; }
  fi

  # setsid: the broker gets its own session, so Ctrl-C in the terminal that ran `up` leaves it alone.
  setsid java "${java_opts[@]}" kafka.Kafka "$K/server.properties" >"$K/logs/kafka.out" 2>&1 </dev/null &
  echo $! >"$K/kafka.pid"
  local t0=$SECONDS
  if ! kafka_wait "$!" "$START_TIMEOUT"; then
    show_log "$K/logs/kafka.out" 20; show_log "$K/logs/server.log"
    die "Kafka did not become healthy (timeout ${START_TIMEOUT}s; logs: $K/logs)"
  fi
  say "kafka up on 127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$CONTROLLER_PORT) in $((SECONDS - t0)) s"
}
stop_kafka() { stop_pid "$K/kafka.pid" kafka.Kafka kafka; }

status() {
  local pid rc=0
  if pid="$(live_pid "$R/redis.pid" redis-server)"; then
    if redis_ok; then say "redis: running (pid $pid) on 127.0.0.1:$REDIS_PORT$([ -f "$R/acl.on" ] && echo ", ACL users")"
    else say "redis: pid $pid not answering PING"; rc=1; fi
  else say "redis: stopped"; rc=1; fi
  if pid="$(live_pid "$K/kafka.pid" kafka.Kafka)"; then
    if kafka_wait "$pid" 5 2>/dev/null; then say "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    else say "kafka: pid $pid not answering metadata requests"; rc=1; fi
  else say "kafka: stopped"; rc=1; fi
  if pid="$(live_pid "$M/mosquitto.pid" mosquitto)"; then
    if mqtt_ok; then say "mqtt: running (pid $pid) on 127.0.0.1:$MQTT_PORT"
    else say "mqtt: pid $pid not accepting publishes"; rc=1; fi
  else say "mqtt: stopped"; rc=1; fi
  say "state dir: $STATE"
  return "$rc"
}

# KAFKA_NODES=3: the 3-broker SASL/ACL cluster of kafka_cluster.sh instead of the single broker,
# and Redis with ACL users (VIGIL_REDIS_ACL=1 asks for those alone, =0 keeps them off).
KAFKA_NODES="${KAFKA_NODES:-${VIGIL_KAFKA_NODES:-1}}"
CLUSTER="$REPO/deploy/local/kafka_cluster.sh"
if [ "$KAFKA_NODES" = 3 ]; then REDIS_ACL="${VIGIL_REDIS_ACL:-1}"; else REDIS_ACL="${VIGIL_REDIS_ACL:-0}"; fi

case "${1:-}" in
  up)
    start_redis
    start_mqtt
    case "$KAFKA_NODES" in
      1) start_kafka ;;
      3) bash "$CLUSTER" up ;;
      *) die "KAFKA_NODES=$KAFKA_NODES: 1 (single broker) or 3 (cluster)" ;;
    esac ;;
  down)
    stop_kafka; stop_redis; stop_mqtt
    if [ -d "$STATE/kafka-cluster" ]; then bash "$CLUSTER" down; fi
    # Throw-away data goes; logs and the cluster id stay for post-mortems.
    rm -rf "$K/data" "$K/server.properties" "$R/data"
    say "stopped, data deleted" ;;
  status) status ;;
  start-redis) start_redis ;;
  stop-redis) stop_redis ;;
  start-kafka) start_kafka ;;
  stop-kafka) stop_kafka ;;
  start-mqtt) start_mqtt ;;
  stop-mqtt) stop_mqtt ;;
  redis-env) redis_env ;;
  *) echo "usage: $0 up|down|status|start-redis|stop-redis|start-kafka|stop-kafka|start-mqtt|stop-mqtt|redis-env" >&2; exit 2 ;;
esac
