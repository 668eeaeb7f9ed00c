#!/usr/bin/env bash
# The local stack without Docker: a single-node Kafka broker in KRaft mode (jars from Maven
# Central, run with Java 17), Azurite (npm) and PostgreSQL (Debian), all on 127.0.0.1.
#
#   deploy/stack.sh install   # Python venv (uv.lock), Kafka jars, Azurite; Debian packages if missing
#   deploy/stack.sh up [kafka|azurite|postgres|eventhub]...    # start (the first three by default),
#                                                              # wait until healthy, create topics
#   deploy/stack.sh down [kafka|azurite|postgres|eventhub]...  # stop (all by default)
#   deploy/stack.sh status
#
# `eventhub` is an Azure Event Hub stand-in, started only when named: a second single-node
# KRaft cluster whose only client listener is SASL_SSL + OAUTHBEARER (Kafka's unsecured JWS
# validator: `alg: none` tokens whose `exp` and `scope` it checks), with a test CA of its own
# ($STACK_DIR/eventhub/tls/ca.pem) and re-authentication every minute at the latest.
#
# STACK_DIR (default .stack) holds data, logs, pids and an `env` file to source. Ports come
# from KAFKA_PORT, AZURITE_PORT and PG_PORT, so a test stack can run beside a dev stack; the
# Event Hub stand-in takes the two ports after Kafka's (KAFKA_PORT + 2 and + 3: 9094/9095,
# 19094/19095, 29094/29095 for the dev, test and bench stacks).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=$(mkdir -p "${STACK_DIR:-$ROOT/.stack}" && cd "${STACK_DIR:-$ROOT/.stack}" && pwd)
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
EVENTHUB_PORT=${EVENTHUB_PORT:-$((KAFKA_PORT + 2))}  # SASL_SSL, OAUTHBEARER
EVENTHUB_CONTROLLER_PORT=${EVENTHUB_CONTROLLER_PORT:-$((KAFKA_PORT + 3))}
# The scope every token must carry (as azure-identity's scope for an Event Hubs namespace).
EVENTHUB_SCOPE=${EVENTHUB_SCOPE:-https://local-eventhub.servicebus.windows.net/.default}
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
  # Prometheus and Alertmanager, for the alert-rule tests (deploy/prometheus/): the tests run the
  # binaries on ports and data dirs of their own, never the packages' services (held off below).
  local monitoring=()
  [[ -x /usr/bin/promtool && -x /usr/bin/prometheus ]] || monitoring+=(prometheus)
  [[ -x /usr/bin/prometheus-alertmanager ]] || monitoring+=(prometheus-alertmanager)
  ((${#missing[@]} + ${#monitoring[@]} == 0)) && return
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]} ${monitoring[*]}; install them (apt-get) and rerun"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
  fi
  if ((${#monitoring[@]})); then
    log "installing Debian packages (services not started): ${monitoring[*]}"
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then  # deny service starts during the install (invoke-rc.d, deb-systemd-invoke)
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${monitoring[@]}" </dev/null || status=$?
    if ((own_policy)); then rm -f "$policy"; fi
    ((status == 0)) || die "installing ${monitoring[*]} failed"
  fi
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

eventhub_healthy() {
  running "$STACK_DIR/eventhub/pid" || die "Event Hub stand-in exited; see $STACK_DIR/eventhub/broker.out and server.log"
  # As for Kafka, over SASL_SSL with a short-lived unsecured token, verifying the broker's
  # certificate against the stack's CA.
  "$PY" - "$EVENTHUB_PORT" "$STACK_DIR/eventhub/tls/ca.pem" "$EVENTHUB_SCOPE" <<'EOF'
import base64, json, sys, time
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
port, ca, scope = sys.argv[1:]
def part(d):
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
def token(_config):
    now = int(time.time())
    claims = {"sub": "stack-healthcheck", "iat": now, "exp": now + 60, "scope": scope}
    return f"{part({'alg': 'none'})}.{part(claims)}.", now + 60
config = {
    "bootstrap.servers": f"127.0.0.1:{port}",
    "security.protocol": "SASL_SSL",
    "sasl.mechanisms": "OAUTHBEARER",
    "ssl.ca.location": ca,
    "oauth_cb": token,
}
admin = AdminClient(config)
admin.poll(0)  # the first token is asked for from poll()
if not admin.list_topics(timeout=3).brokers:
    sys.exit(1)
probe = Consumer({**config, "group.id": "stack-healthcheck"})
try:
    probe.poll(0)
    probe.committed([TopicPartition("stack-healthcheck", 0)], timeout=5)
finally:
    probe.close()
EOF
}

eventhub_tls() { # a test CA and the broker's certificate (127.0.0.1, localhost) signed by it
  local tls=$1
  [[ -f $tls/broker.keystore.pem && -f $tls/ca.pem ]] &&
    openssl x509 -checkend 86400 -noout -in "$tls/broker.pem" >/dev/null 2>&1 && return
  log "creating the Event Hub stand-in's test CA and broker certificate in $tls"
  rm -rf "$tls" && mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=pipeline local test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$tls/broker.ext"
  openssl x509 -req -days 825 -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -extfile "$tls/broker.ext" -out "$tls/broker.pem" 2>/dev/null
  # Kafka's PEM key store: the (unencrypted PKCS#8) key and the certificate chain in one file.
  cat "$tls/broker.key" "$tls/broker.pem" "$tls/ca.pem" >"$tls/broker.keystore.pem"
  chmod 600 "$tls"/*.key "$tls/broker.keystore.pem"
}

start_eventhub() {
  local dir=$STACK_DIR/eventhub
  running "$dir/pid" && return
  mkdir -p "$dir/data"
  eventhub_tls "$dir/tls"
  # The broker talks to itself (inter-broker) over the same listener with a token of its own
  # (unsecuredLogin*); clients' tokens are checked by the unsecured validator (unsecuredValidator*):
  # `exp` in the future, `scope` holding EVENTHUB_SCOPE. A session lasts until its token
  # expires or connections.max.reauth.ms, whichever is first; then the client re-authenticates.
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$EVENTHUB_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$EVENTHUB_PORT,CONTROLLER://127.0.0.1:$EVENTHUB_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$EVENTHUB_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=OAUTHBEARER
sasl.mechanism.inter.broker.protocol=OAUTHBEARER
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker" unsecuredLoginListClaim_scope=" $EVENTHUB_SCOPE" unsecuredValidatorRequiredScope="$EVENTHUB_SCOPE" unsecuredValidatorAllowableClockSkewMs="1000";
connections.max.reauth.ms=60000
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker.keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
ssl.client.auth=none
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
EOF
  if [[ ! -f $dir/data/meta.properties ]]; then
    log "formatting the Event Hub stand-in's KRaft storage"
    java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
      -t "$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1
  fi
  log "starting the Event Hub stand-in (SASL_SSL, OAUTHBEARER) on 127.0.0.1:$EVENTHUB_PORT"
  # A small heap and a cheap JIT: it carries test traffic only, beside the main broker.
  nohup java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
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
  local db  # Dagster's storage, and the database CDC replicates into
  for db in dagster cdc; do
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 ||
      as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
  done
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
export EVENTHUB_BOOTSTRAP_SERVERS=127.0.0.1:$EVENTHUB_PORT
export EVENTHUB_CA_LOCATION=$STACK_DIR/eventhub/tls/ca.pem
export EVENTHUB_SCOPE=$EVENTHUB_SCOPE
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
      eventhub) wait_for "Event Hub stand-in" 90 eventhub_healthy ;;
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
  ((${#services[@]})) || services=(kafka azurite postgres eventhub)
  for service in "${services[@]}"; do
    case $service in
      kafka) stop_pid "$STACK_DIR/kafka/pid" Kafka ;;
      eventhub) stop_pid "$STACK_DIR/eventhub/pid" "the Event Hub stand-in" ;;
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
  running "$STACK_DIR/eventhub/pid" &&
    echo "eventhub: running (SASL_SSL 127.0.0.1:$EVENTHUB_PORT)" || echo "eventhub: stopped"
}

case "${1:-}" in
  install) install ;;
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  status) status ;;
  *) echo "usage: $0 install|up|down|status [kafka|azurite|postgres|eventhub]..." >&2; exit 2 ;;
esac
