#!/usr/bin/env bash
# A single-node Apache Kafka 4.x broker (KRaft, broker+controller) on 127.0.0.1, assembled from
# the Maven Central jars, for the tests and the streaming demo.
#
#   scripts/kafka.sh start  [--port 9092] [--name default]   start (or reuse) a broker, wait until it answers
#   scripts/kafka.sh stop   [--name default]                 stop it (SIGTERM, then SIGKILL)
#   scripts/kafka.sh status [--name default]                 exit 0 when it runs
#   scripts/kafka.sh reset  [--name default]                 stop it and delete its data
#   scripts/kafka.sh jars                                    only fetch the jars
#   scripts/kafka.sh topic NAME [PARTITIONS]  [--port 9092]   create a topic (if missing)
#   scripts/kafka.sh produce TOPIC            [--port 9092]   one message per stdin line
#   scripts/kafka.sh consume TOPIC N          [--port 9092]   print N messages (read_committed), then exit
#                                                             (or after KAFKA_CONSUME_IDLE_MS without one)
#
# Jars go to .kafka/lib (fetched once with Maven), data and logs to .kafka/<name>/.
# Several brokers can run side by side under different names and ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_DIR="${BERTFLOW_KAFKA_DIR:-$ROOT/.kafka}"
LIB="$KAFKA_DIR/lib"
cmd="${1:-status}"; shift || true
PORT=9092
NAME=default
ARGS=()
while (($#)); do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --*) echo "kafka.sh: unknown option $1" >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
HOME_DIR="$KAFKA_DIR/$NAME"
PIDFILE="$HOME_DIR/broker.pid"
log() { printf '[kafka] %s\n' "$*" >&2; }

ensure_java() {
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    log "installing Java 17 and Maven"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
  fi
}

fetch_jars() {
  if [ -f "$LIB/.complete" ]; then return; fi
  ensure_java
  log "fetching Apache Kafka jars from Maven Central -> $LIB"
  rm -rf "$LIB"; mkdir -p "$LIB"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIB" -DincludeScope=runtime >&2
  touch "$LIB/.complete"
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

java_run() {
  java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" \
    -cp "$LIB/*" "$@"
}

start() {
  fetch_jars
  if running; then
    log "broker '$NAME' already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$(cat "$HOME_DIR/port")"
    return
  fi
  if port_open "$PORT"; then
    echo "kafka.sh: 127.0.0.1:$PORT is already taken by another process; stop it or pass --port" >&2
    exit 1
  fi
  local ctrl=$((PORT + 1))
  mkdir -p "$HOME_DIR"
  cat > "$HOME_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$HOME_DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.classic.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=500
auto.create.topics.enable=false
delete.topic.enable=true
message.max.bytes=10485760
replica.fetch.max.bytes=10485760
PROPS
  echo "$PORT" > "$HOME_DIR/port"
  # Format the storage once; a restart keeps the data (topics, committed offsets).
  if [ ! -f "$HOME_DIR/data/meta.properties" ]; then
    java_run kafka.tools.StorageTool format --ignore-formatted -t "$(java_run kafka.tools.StorageTool random-uuid)" \
      -c "$HOME_DIR/server.properties" > "$HOME_DIR/format.log" 2>&1 || {
      cat "$HOME_DIR/format.log" >&2; exit 1; }
  fi
  log "starting broker '$NAME' on 127.0.0.1:$PORT (log: $HOME_DIR/broker.log)"
  nohup bash -c "exec java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile='$ROOT/scripts/kafka/log4j2.yaml' \
    -cp '$LIB/*' kafka.Kafka '$HOME_DIR/server.properties'" > "$HOME_DIR/broker.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 120))
  until port_open "$PORT"; do
    if ! running; then tail -n 40 "$HOME_DIR/broker.log" >&2; echo "kafka.sh: broker exited" >&2; exit 1; fi
    if ((SECONDS > deadline)); then echo "kafka.sh: broker did not open port $PORT in 120 s" >&2; exit 1; fi
    sleep 0.5
  done
  # The port opens before the broker serves requests: wait for its "started" line.
  until grep -q 'Kafka Server started' "$HOME_DIR/broker.log"; do
    if ((SECONDS > deadline)); then echo "kafka.sh: broker did not answer in 120 s" >&2; exit 1; fi
    sleep 0.5
  done
  log "broker '$NAME' ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! running; then log "broker '$NAME' not running"; rm -f "$PIDFILE"; return; fi
  local pid; pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "broker '$NAME' stopped"
}

tool() {
  fetch_jars
  java -Xmx256m -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" -cp "$LIB/*" "$@"
}

case "$cmd" in
  start) start ;;
  topic)
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" --create --if-not-exists \
      --topic "${ARGS[0]}" --partitions "${ARGS[1]:-1}" --replication-factor 1 ;;
  produce)
    tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "127.0.0.1:$PORT" --topic "${ARGS[0]}" ;;
  consume)
    tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$PORT" --topic "${ARGS[0]}" \
      --from-beginning --max-messages "${ARGS[1]:-10}" --isolation-level read_committed \
      --timeout-ms "${KAFKA_CONSUME_IDLE_MS:-120000}" \
      --formatter-property print.key=true ;;
  stop) stop ;;
  status) if running; then echo "running on 127.0.0.1:$(cat "$HOME_DIR/port")"; else echo "stopped"; exit 1; fi ;;
  reset) stop; rm -rf "$HOME_DIR" ;;
  jars) fetch_jars ;;
  *) echo "usage: kafka.sh start|stop|status|reset|jars|topic|produce|consume [--port P] [--name N]" >&2; exit 2 ;;
esac
