#!/usr/bin/env bash
# The local stack without Docker: a single-node Kafka broker in KRaft mode (jars from Maven
# Central, run with Java 17), Azurite (npm) and PostgreSQL (Debian), all on 127.0.0.1.
#
#   deploy/stack.sh install   # Python venv (uv.lock), Kafka jars, Azurite; Debian packages if missing
#   deploy/stack.sh up [kafka|azurite|postgres]...    # start (all by default), wait until healthy,
#                                                     # create topics
#   deploy/stack.sh down [kafka|azurite|postgres]...  # stop (all by default)
#   deploy/stack.sh status
#
# STACK_DIR (default .stack) holds data, logs, pids and an `env` file to source. Ports come
# from KAFKA_PORT, AZURITE_PORT and PG_PORT, so a test stack can run beside a dev stack.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=$(mkdir -p "${STACK_DIR:-$ROOT/.stack}" && cd "${STACK_DIR:-$ROOT/.stack}" && pwd)
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
AZURITE_PORT=${AZURITE_PORT:-10000}
PG_PORT=${PG_PORT:-15432}  # below the ephemeral range (32768+), where a busy client could hold it
# PgBouncer in front of PostgreSQL for Dagster's storage: dagster-postgres opens a connection per
# query (NullPool), and a PostgreSQL backend per connection cost ~0.3 cores at the idle daemon's rate.
PG_POOL_PORT=${PG_POOL_PORT:-$((PG_PORT + 1000))}
UV_VERSION=0.13.9
VENV=$ROOT/.venv
PY=$VENV/bin/python
KAFKA_LIB=$ROOT/deploy/kafka/target/lib
AZURITE_BIN=$ROOT/deploy/azurite/node_modules/.bin/azurite-blob
# Azurite's documented development account; not a secret.
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

ensure_debian_packages() {
  local missing=()
  java -version 2>&1 | grep -q 'version "17' || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v npm >/dev/null || missing+=(nodejs npm)
  [[ -n "$(pg_bin)" ]] || missing+=(postgresql)
  [[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
  python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || missing+=(python3.11 python3.11-venv)
  ((${#missing[@]} == 0)) && return
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get) and rerun"
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
}

install() {
  ensure_debian_packages
  if [[ ! -x $VENV/bin/uv ]]; then
    log "creating $VENV with uv $UV_VERSION"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "uv==$UV_VERSION"
  fi
  log "syncing Python dependencies from uv.lock"
  (cd "$ROOT" && UV_PROJECT_ENVIRONMENT=$VENV "$VENV/bin/uv" sync --locked --extra dev --quiet)
  if [[ ! -f $KAFKA_LIB/.complete || $ROOT/deploy/kafka/pom.xml -nt $KAFKA_LIB/.complete ]]; then
    log "resolving the Kafka broker from Maven Central"
    rm -rf "$KAFKA_LIB"
    mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies </dev/null
    touch "$KAFKA_LIB/.complete"
  fi
  if [[ ! -x $AZURITE_BIN ]]; then
    log "installing Azurite from the npm registry"
    npm ci --prefix "$ROOT/deploy/azurite" --no-audit --no-fund --loglevel=error </dev/null
  fi
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }  # the file may vanish as its process exits

wait_for() { # description, timeout seconds, command...
  local what=$1 timeout=$2; shift 2
  local until=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < until)) || die "$what not ready after ${timeout}s"
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

azurite_healthy() {
  running "$STACK_DIR/azurite/pid" || die "Azurite exited; see $STACK_DIR/azurite/azurite.log"
  port_open "$AZURITE_PORT"
}

kafka_healthy() {
  running "$STACK_DIR/kafka/pid" || die "Kafka exited; see $STACK_DIR/kafka/broker.out and server.log"
  # Healthy = metadata answers and the group coordinator serves offset fetches (a new
  # broker first has to create __consumer_offsets).
  "$PY" - "$KAFKA_PORT" <<'EOF'
import sys
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
servers = f"127.0.0.1:{sys.argv[1]}"
if not AdminClient({"bootstrap.servers": servers}).list_topics(timeout=2).brokers:
    sys.exit(1)
probe = Consumer({"bootstrap.servers": servers, "group.id": "stack-healthcheck"})
try:
    probe.committed([TopicPartition("stack-healthcheck", 0)], timeout=5)
finally:
    probe.close()
EOF
}

start_kafka() {
  local dir=$STACK_DIR/kafka
  running "$dir/pid" && return
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
EOF
  if [[ ! -f $dir/data/meta.properties ]]; then
    log "formatting KRaft storage"
    java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
      -t "$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1
  fi
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$dir" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$dir/server.properties" >"$dir/broker.out" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

start_azurite() {
  local dir=$STACK_DIR/azurite
  running "$dir/pid" && return
  mkdir -p "$dir/data"
  log "starting Azurite (blob) on 127.0.0.1:$AZURITE_PORT"
  nohup "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --location "$dir/data" \
    --skipApiVersionCheck --loose --silent >"$dir/azurite.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

as_postgres() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local dir=$STACK_DIR/postgres bin
  bin=$(pg_bin)
  if as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    start_pgbouncer "$dir"
    return
  fi
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres: "$dir"
  if [[ ! -f $dir/data/PG_VERSION ]]; then
    log "initialising PostgreSQL in $dir/data"
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
    -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1" >/dev/null
  as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='dagster'" | grep -q 1 ||
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres dagster
  start_pgbouncer "$dir"
}

start_pgbouncer() {
  local dir=$1
  running "$dir/pgbouncer.pid" && return
  echo '"postgres" ""' >"$dir/pgbouncer.users"
  # Session pooling: a client keeps its server connection for its session (LISTEN/NOTIFY works),
  # and a closed client's connection goes back to the pool instead of ending a backend.
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PG_POOL_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/pgbouncer.users
pool_mode = session
max_client_conn = 1000
default_pool_size = 20
; every database (tests and benchmarks make one per run) gets its own pool: stay below
; PostgreSQL's 100 connections in total (clients wait for a connection beyond this)
max_user_connections = 80
server_idle_timeout = 30
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  [[ $(id -u) == 0 ]] && chown postgres: "$dir"/pgbouncer.*
  log "starting PgBouncer on 127.0.0.1:$PG_POOL_PORT"
  as_postgres /usr/sbin/pgbouncer -d -q "$dir/pgbouncer.ini"
  wait_for "PgBouncer" 30 pgbouncer_healthy
}

pgbouncer_healthy() {
  running "$STACK_DIR/postgres/pgbouncer.pid" &&
    as_postgres "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_POOL_PORT" -U postgres -d dagster -tAc "SELECT 1" >/dev/null 2>&1
}

create_containers() {
  "$PY" - "$AZURITE_PORT" "$AZURITE_ACCOUNT" "$AZURITE_KEY" "$@" <<'EOF'
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
port, account, key, *containers = sys.argv[1:]
url = f"http://127.0.0.1:{port}/{account}"
service = BlobServiceClient(url, credential={"account_name": account, "account_key": key})
for name in containers:
    try:
        service.create_container(name)
    except ResourceExistsError:
        pass
EOF
}

write_env() {
  cat >"$STACK_DIR/env" <<EOF
export STACK_DIR=$STACK_DIR
export PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
export PIPELINE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
export AZURITE_BLOB_ENDPOINT=http://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT
export AZURITE_ACCOUNT_NAME=$AZURITE_ACCOUNT
export AZURITE_ACCOUNT_KEY='$AZURITE_KEY'
export PIPELINE_STORAGE__AZURE_ENDPOINT=http://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT
export DAGSTER_PG_HOST=127.0.0.1
export DAGSTER_PG_PORT=$PG_POOL_PORT
EOF
}

up() {
  [[ -d $KAFKA_LIB && -x $AZURITE_BIN && -x $PY && -x /usr/sbin/pgbouncer ]] || install
  local services=("$@")
  ((${#services[@]})) || services=(kafka azurite postgres)
  for service in "${services[@]}"; do "start_$service"; done
  for service in "${services[@]}"; do
    case $service in
      kafka) wait_for "Kafka" 90 kafka_healthy ;;
      azurite) wait_for "Azurite" 30 azurite_healthy ;;
    esac
  done
  write_env
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  if [[ " ${services[*]} " == *" kafka "* ]]; then
    (cd "$ROOT" && "$VENV/bin/pipeline-topics" create >/dev/null)
  fi
  if [[ " ${services[*]} " == *" azurite "* ]]; then
    create_containers files lake
  fi
  log "up: ${services[*]}; source $STACK_DIR/env to use it"
}

stop_pid() {
  local pidfile=$1 name=$2
  if running "$pidfile"; then
    log "stopping $name"
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 60); do running "$pidfile" || break; sleep 0.5; done
    running "$pidfile" && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop_postgres() {
  stop_pid "$STACK_DIR/postgres/pgbouncer.pid" PgBouncer
  if [[ -f $STACK_DIR/postgres/data/PG_VERSION ]]; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$STACK_DIR/postgres/data" -m fast stop >/dev/null 2>&1 || true
  fi
}

down() {
  local services=("$@")
  ((${#services[@]})) || services=(kafka azurite postgres)
  for service in "${services[@]}"; do
    case $service in
      kafka) stop_pid "$STACK_DIR/kafka/pid" Kafka ;;
      azurite) stop_pid "$STACK_DIR/azurite/pid" Azurite ;;
      postgres) stop_postgres ;;
      *) die "unknown service $service" ;;
    esac
  done
}

status() {
  running "$STACK_DIR/kafka/pid" && echo "kafka: running (127.0.0.1:$KAFKA_PORT)" || echo "kafka: stopped"
  running "$STACK_DIR/azurite/pid" && echo "azurite: running (127.0.0.1:$AZURITE_PORT)" || echo "azurite: stopped"
  as_postgres "$(pg_bin)/pg_ctl" -D "$STACK_DIR/postgres/data" status >/dev/null 2>&1 &&
    echo "postgres: running (127.0.0.1:$PG_PORT)" || echo "postgres: stopped"
  running "$STACK_DIR/postgres/pgbouncer.pid" &&
    echo "pgbouncer: running (127.0.0.1:$PG_POOL_PORT)" || echo "pgbouncer: stopped"
}

case "${1:-}" in
  install) install ;;
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  status) status ;;
  *) echo "usage: $0 install|up|down|status [kafka|azurite|postgres]..." >&2; exit 2 ;;
esac
