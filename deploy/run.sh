#!/usr/bin/env bash
# The main job, one command: install, start Kafka/Azurite/PostgreSQL, start the sample-event
# simulator, then `dagster dev` on http://127.0.0.1:${DAGSTER_PORT:-3000}.
# Ctrl-C stops Dagster and the simulator; `bash deploy/stack.sh down` stops the stack.
#
#   --source kafka       (default) the simulator produces to the source topics on the local broker
#   --source eventhouse  the simulator fills a Kusto double's tables; the Eventhouse poller's
#                        sensors poll them into the source topics
#   --source eventhub    the source topics live on a second broker standing in for Event Hub
#                        (SASL_SSL + OAUTHBEARER, a test CA); the pipeline's own topics stay on
#                        the local broker. Tokens come from a file, as from a sidecar.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SOURCE=${SOURCE:-kafka}
while [[ $# -gt 0 ]]; do
  case $1 in
    --source) SOURCE=$2; shift 2 ;;
    --source=*) SOURCE=${1#--source=}; shift ;;
    *) echo "usage: deploy/run.sh [--source kafka|eventhouse|eventhub]" >&2; exit 2 ;;
  esac
done
case $SOURCE in
  kafka) ;;
  eventhouse)
    export PIPELINE_EVENTHOUSE__ENABLED=true
    export PIPELINE_EVENTHOUSE__KUSTO__CLUSTER_URL=http://127.0.0.1:${KUSTO_PORT:-8768}
    ;;
  eventhub) ;;
  *) echo "[run] unknown source '$SOURCE': kafka, eventhouse or eventhub" >&2; exit 2 ;;
esac
bash deploy/stack.sh install
bash deploy/stack.sh up
[[ $SOURCE != eventhub ]] || bash deploy/stack.sh up eventhub
# shellcheck disable=SC1091
source "${STACK_DIR:-$ROOT/.stack}/env"
if [[ $SOURCE == eventhub ]]; then
  # An unsigned token (Kafka's unsecured validator) valid for a day, where a sidecar would keep one.
  TOKEN_FILE=$STACK_DIR/eventhub/token
  .venv/bin/python -m pipeline_sim token --scope "$EVENTHUB_SCOPE" --lifetime-s 86400 >"$TOKEN_FILE"
  export PIPELINE_SOURCE_KAFKA__BOOTSTRAP_SERVERS=$EVENTHUB_BOOTSTRAP_SERVERS
  export PIPELINE_SOURCE_KAFKA__SECURITY_PROTOCOL=SASL_SSL
  export PIPELINE_SOURCE_KAFKA__SASL_MECHANISM=OAUTHBEARER
  export PIPELINE_SOURCE_KAFKA__OAUTH_SCOPE=$EVENTHUB_SCOPE
  export PIPELINE_SOURCE_KAFKA__OAUTH_TOKEN_FILE=$TOKEN_FILE
  export PIPELINE_SOURCE_KAFKA__SSL_CA_LOCATION=$EVENTHUB_CA_LOCATION
fi

export DAGSTER_HOME=$STACK_DIR/dagster_home
mkdir -p "$DAGSTER_HOME"
cp deploy/dagster/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
export DAGSTER_PG_URL=postgresql+psycopg2://postgres@$DAGSTER_PG_HOST:$DAGSTER_PG_PORT/dagster
export PIPELINE_CONFIG_FILE=${PIPELINE_CONFIG_FILE:-$ROOT/deploy/config.local.yaml}
export PIPELINE_STORAGE__LAKE_ROOT=${PIPELINE_STORAGE__LAKE_ROOT:-$STACK_DIR/lake/tables}
# The stack's cdc database, straight on PostgreSQL (PgBouncer refuses the statement_timeout option)
export PIPELINE_CDC__POSTGRES__PORT=${PIPELINE_CDC__POSTGRES__PORT:-$((DAGSTER_PG_PORT - 1000))}
export PIPELINE_CDC__POSTGRES__DBNAME=${PIPELINE_CDC__POSTGRES__DBNAME:-cdc}
# The ClaimX API double checks this bearer token; a real deployment sets its own.
export CLAIMX_API_TOKEN=${CLAIMX_API_TOKEN:-local-development-token}
.venv/bin/pipeline-topics create >/dev/null  # the retry topics of this config
[[ $SOURCE != eventhub ]] || .venv/bin/pipeline-topics create --sources >/dev/null  # Event Hub's own are made in Azure

.venv/bin/python -m pipeline_sim --rate "${SIM_RATE:-20}" --claimx-rate "${SIM_CLAIMX_RATE:-5}" --cdc-rate "${SIM_CDC_RATE:-10}" \
  --source "${SOURCE/eventhub/kafka}" --kusto-port "${KUSTO_PORT:-8768}" >"$STACK_DIR/simulator.log" 2>&1 &
SIM_PID=$!
trap 'kill $SIM_PID 2>/dev/null || true' EXIT
# The metrics and health service (pipeline_defs/ops): /metrics, /health/live, /health/ready
.venv/bin/python -m pipeline_defs.ops --port "${OPS_PORT:-9464}" >"$STACK_DIR/ops.log" 2>&1 &
OPS_PID=$!
trap 'kill $SIM_PID $OPS_PID 2>/dev/null || true' EXIT
echo "[run] metrics and health on http://127.0.0.1:${OPS_PORT:-9464}/metrics and /health/ready (log: $STACK_DIR/ops.log)"
echo "[run] simulator sending ${SIM_RATE:-20} XACT and ${SIM_CLAIMX_RATE:-5} ClaimX events/s into $SOURCE (log: $STACK_DIR/simulator.log)"
echo "[run] Delta tables under $PIPELINE_STORAGE__LAKE_ROOT; attachments in Azurite container 'files'"
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
