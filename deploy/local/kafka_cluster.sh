#!/usr/bin/env bash
# A local 3-broker Kafka 4 cluster (KRaft, 3-voter controller quorum) with SASL/SCRAM users and
# ACLs, for trying Vigil past one broker: `make infra-up KAFKA_NODES=3` (services.sh calls this).
#   kafka_cluster.sh up | down | status | start-node N | stop-node N | kill-node N | env
# Clients: 127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 (VIGIL_KAFKA_CLUSTER_PORT moves them),
# SASL_PLAINTEXT + SCRAM-SHA-512. Users admin, ingest, alerts, recorder, notifier, console, viewer get random
# passwords, kept in $STATE/kafka-cluster/secrets/<user> (mode 600); `env` prints them as
# VIGIL_KAFKA_* exports.
# kafka_acls.py grants each principal what it needs and nothing else (docs in deploy/local/README.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${VIGIL_STATE:-$REPO/.vigil}"
PYTHON="${PYTHON:-python3}"
BASE_PORT="${VIGIL_KAFKA_CLUSTER_PORT:-19092}"
NODES=3
KAFKA_VERSION="${VIGIL_KAFKA_VERSION:-4.1.1}"
KAFKA_LIBS="${VIGIL_CACHE:-$HOME/.cache/vigil}/kafka-$KAFKA_VERSION/libs"
KAFKA_HEAP="${VIGIL_KAFKA_CLUSTER_HEAP:--Xms192m -Xmx384m}"
START_TIMEOUT="${VIGIL_START_TIMEOUT:-120}"
C="$STATE/kafka-cluster"
USERS=(admin ingest alerts recorder notifier console viewer)

say() { echo "kafka-cluster: $*" 2>/dev/null || true; }
die() { echo "kafka-cluster: ERROR: $*" >&2 2>/dev/null || true; exit 1; }
port() { echo $((BASE_PORT + $1 - 1)); }
cport() { echo $((BASE_PORT + 100 + $1 - 1)); }
bootstrap() { local n s=""; for ((n = 1; n <= NODES; n++)); do s+="${s:+,}127.0.0.1:$(port "$n")"; done; echo "$s"; }

live_pid() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q kafka.Kafka \
    && echo "$pid"
}

secrets() {  # random passwords, once per state dir
  mkdir -p "$C/secrets"; chmod 700 "$C/secrets"
  local u
  for u in "${USERS[@]}"; do
    [ -s "$C/secrets/$u" ] || (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))' >"$C/secrets/$u")
  done
}
secret() { cat "$C/secrets/$1"; }

java_opts() {
  local heap
  read -ra heap <<<"$KAFKA_HEAP"
  JAVA_OPTS=(-cp "$KAFKA_LIBS/*" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true -Dkafka.logs.dir="$C/node$1/logs"
    -Dlog4j2.configurationFile="$REPO/deploy/local/kafka/log4j2.properties")
}

configure() {  # node
  local n=$1 voters="" i
  for ((i = 1; i <= NODES; i++)); do voters+="${voters:+,}$i@127.0.0.1:$(cport "$i")"; done
  mkdir -p "$C/node$n/logs" "$C/node$n/data"
  (umask 077; sed -e "s|@NODE_ID@|$n|g" -e "s|@PORT@|$(port "$n")|g" -e "s|@CONTROLLER_PORT@|$(cport "$n")|g" \
    -e "s|@VOTERS@|$voters|g" -e "s|@DATA_DIR@|$C/node$n/data|g" -e "s|@ADMIN_PASSWORD@|$(secret admin)|g" \
    "$REPO/deploy/local/kafka/cluster.properties" >"$C/node$n/server.properties")
  if [ ! -f "$C/node$n/data/meta.properties" ]; then
    [ -s "$C/cluster.id" ] || { java_opts "$n"; java "${JAVA_OPTS[@]}" kafka.tools.StorageTool random-uuid >"$C/cluster.id"; }
    local scram=() u
    for u in "${USERS[@]}"; do scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(secret "$u")]"); done
    java_opts "$n"
    java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format -t "$(cat "$C/cluster.id")" \
      -c "$C/node$n/server.properties" "${scram[@]}" >>"$C/node$n/logs/format.log" 2>&1 \
      || { tail -20 "$C/node$n/logs/format.log" >&2; die "formatting node $n failed"; }
  fi
}

start_node() {
  local n=$1
  if live_pid "$C/node$n/kafka.pid" >/dev/null; then say "node $n already running"; return 0; fi
  (exec 3<>"/dev/tcp/127.0.0.1/$(port "$n")") 2>/dev/null && die "port $(port "$n") is taken; set VIGIL_KAFKA_CLUSTER_PORT"
  configure "$n"
  java_opts "$n"
  setsid java "${JAVA_OPTS[@]}" kafka.Kafka "$C/node$n/server.properties" >"$C/node$n/logs/kafka.out" 2>&1 </dev/null &
  echo $! >"$C/node$n/kafka.pid"
  say "node $n starting on 127.0.0.1:$(port "$n") (controller $(cport "$n"), pid $!)"
}

wait_healthy() {  # every running node answers metadata requests as admin
  "$PYTHON" "$REPO/deploy/local/kafka_acls.py" --wait "$START_TIMEOUT" --bootstrap "$(bootstrap)" \
    --admin-password-file "$C/secrets/admin" --nodes "$@"
}

stop_node() {  # node signal [seconds to wait before SIGKILL, default 30]
  local pid i
  pid="$(live_pid "$C/node$1/kafka.pid")" || { rm -f "$C/node$1/kafka.pid"; return 0; }
  kill "-$2" "$pid" 2>/dev/null || true
  for ((i = 0; i < ${3:-30} * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$C/node$1/kafka.pid"
  say "node $1 stopped ($2)"
}

case "${1:-}" in
  up)
    [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Kafka jars missing in $KAFKA_LIBS (run deploy/local/setup.sh)"
    secrets
    for ((n = 1; n <= NODES; n++)); do start_node "$n"; done
    wait_healthy 1 2 3 || { tail -30 "$C"/node*/logs/server.log >&2; die "cluster did not become healthy"; }
    "$PYTHON" "$REPO/deploy/local/kafka_acls.py" --bootstrap "$(bootstrap)" --admin-password-file "$C/secrets/admin" --grant
    say "up: $(bootstrap) (SASL_PLAINTEXT, SCRAM-SHA-512; users ${USERS[*]}; \`$0 env\` prints the credentials)" ;;
  down)
    # Side by side, 5 s each before SIGKILL: the data is deleted next, and brokers stopped one
    # after the other wait for a quorum that is going away (30 s for the last one).
    for ((n = 1; n <= NODES; n++)); do stop_node "$n" TERM 5 & done
    wait
    rm -rf "$C"/node*/data "$C/cluster.id"
    say "stopped, data deleted" ;;
  start-node) start_node "$2"; wait_healthy "$2" ;;
  stop-node) stop_node "$2" TERM ;;
  kill-node) stop_node "$2" KILL ;;
  status)
    for ((n = 1; n <= NODES; n++)); do
      if pid="$(live_pid "$C/node$n/kafka.pid")"; then say "node $n: pid $pid on 127.0.0.1:$(port "$n")"; else say "node $n: stopped"; fi
    done ;;
  env)
    secrets
    echo "export VIGIL_KAFKA_BOOTSTRAP=$(bootstrap)"
    for u in "${USERS[@]}"; do
      up="$(echo "$u" | tr '[:lower:]' '[:upper:]')"
      echo "export VIGIL_KAFKA_${up}_PASSWORD_FILE=$C/secrets/$u"
    done ;;
  *) echo "usage: $0 up|down|status|start-node N|stop-node N|kill-node N|env" >&2; exit 2 ;;
esac
