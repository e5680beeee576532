#!/usr/bin/env bash
# A shared MLflow tracking server for a team or a cluster (sqlite backend, proxied artifacts).
#   launch/tracking_server.sh [PORT] [STORE_DIR]
# then, on every machine that runs synque jobs:
#   export MLFLOW_TRACKING_URI=http://<host>:PORT
set -euo pipefail
PORT="${1:-5000}"
STORE="$(realpath -m "${2:-$(dirname "$0")/../mlruns/server}")"
mkdir -p "$STORE/artifacts"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server \
  --backend-store-uri "sqlite:///$STORE/mlflow.db" \
  --artifacts-destination "$STORE/artifacts" \
  --host "${HOST:-127.0.0.1}" --port "$PORT" --workers "${WORKERS:-1}"
