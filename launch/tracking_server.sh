#!/usr/bin/env bash
# A shared MLflow tracking server for a team or a cluster: PostgreSQL backend, proxied
# artifacts, MLflow's basic-auth app. Every process runs in the background; `stop` ends them.
#
#   export MLFLOW_TRACKING_USERNAME=admin            # default: admin
#   read -rs MLFLOW_TRACKING_PASSWORD; export MLFLOW_TRACKING_PASSWORD   # >= 12 characters
#   launch/tracking_server.sh [start|stop|status] [STORE]
# then, on every machine that runs synque jobs, export the printed MLFLOW_TRACKING_URI and
# the same MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
#
# Credentials. One pair of variables serves both sides: MLflow's client reads
# MLFLOW_TRACKING_USERNAME/PASSWORD, and this script hands the same pair to the server as
# MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD (environment only: never on a command line, in a file
# or in a log). MLflow creates that admin user on the first start against an empty user
# store and ignores the password afterwards: to change it later, use MLflow's
# update-password API, not this variable. Without a password the script refuses to start,
# unless AUTH=off (no authentication: anyone who reaches the port can read and write).
# Other users: create them through MLflow's /signup page or its users API as the admin.
#
# Settings (environment):
#   STORE      store folder (or the argument after the subcommand; default mlruns/server):
#              pg/ (database cluster, socket, postgres.log), artifacts/, mlflow.log,
#              mlflow.pid, auth.ini and flask_secret (mode 0600, no password in either)
#   BACKEND    postgres (default) or sqlite (a quick single-user server: STORE/mlflow.db,
#              users in STORE/basic_auth.db); `stop` and `status` find either by themselves
#   PORT       MLflow's port (default 5000); HOST its interface (default 127.0.0.1; use
#              0.0.0.0 for a team, and keep AUTH on); ALLOWED_HOSTS MLflow's --allowed-hosts
#              (its default takes localhost and private IPs: name your server's host name)
#   PG_PORT    PostgreSQL's port number (default 5433). PostgreSQL listens on no TCP port:
#              only on a unix socket in STORE/pg/run that only its owner may open (the
#              socket's name carries the port number)
#   AUTH       on (default) or off;  WORKERS  MLflow workers (default 2)
#   DEFAULT_PERMISSION  what a signed-in user may do on experiments that others created
#              (default EDIT: log runs into the shared per-task experiments, never delete)
#   PYTHON     the interpreter that has mlflow and psycopg2 (default python3)
#   PG_BIN     PostgreSQL's programs (default the newest /usr/lib/postgresql/*/bin)
#   AUTH_CACHE_TTL  seconds a checked password stays accepted without re-hashing (default 60;
#              0 = off). MLflow hashes passwords with PBKDF2, ~0.3 s of CPU per request
#              without the cache; a password change reaches the other workers after the TTL
#   HEALTH_TIMEOUT  seconds to wait for /health (default 120)
#
# Running as root (CI): PostgreSQL refuses root, so initdb/pg_ctl/psql run as the `postgres`
# user, STORE/pg belongs to it and STORE gets o+x; the folders above STORE must already be
# traversable by `postgres` (the script stops and names the one that is not).
set -euo pipefail
umask 077

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMD=start
case "${1:-}" in start | stop | status) CMD="$1"; shift ;; esac
STORE="$(realpath -m "${1:-${STORE:-$ROOT/mlruns/server}}")"
BACKEND="${BACKEND:-postgres}"
PORT="${PORT:-5000}"
HOST="${HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5433}"
AUTH="${AUTH:-on}"
WORKERS="${WORKERS:-2}"
PYTHON="${PYTHON:-python3}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
PG_ROOT="$STORE/pg"
PGDATA="$PG_ROOT/data"
PG_SOCK="$PG_ROOT/run"
MLFLOW_PID="$STORE/mlflow.pid"
MLFLOW_LOG="$STORE/mlflow.log"

die() { echo "tracking_server: $*" >&2; exit 1; }
say() { echo "tracking_server: $*" >&2; }

case "$BACKEND" in postgres | sqlite) ;; *) die "BACKEND=$BACKEND: use postgres or sqlite" ;; esac
case "$AUTH" in on | off) ;; *) die "AUTH=$AUTH: use on or off" ;; esac
# The store's path goes into database URIs and postgresql.conf unquoted: keep it plain.
[[ "$STORE" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "STORE=$STORE: use a path without spaces or quotes"

as_root() { [[ "$(id -u)" == 0 ]]; }

# PostgreSQL's programs as the user that owns the cluster (postgres when we are root).
pg() {
  local prog="$PG_BIN/$1"; shift
  if as_root; then
    (cd / && runuser -u postgres -- "$prog" "$@")
  else
    (cd / && "$prog" "$@")
  fi
}

psql_q() {
  pg psql -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

pg_running() { [[ -d "$PGDATA" ]] && pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }

mlflow_pid() {  # the pid file's process, if it is alive and still an mlflow (not a reused pid)
  local pid
  pid="$(cat "$MLFLOW_PID" 2>/dev/null || true)"
  [[ -n "$pid" && "$(ps -p "$pid" -o args= 2>/dev/null)" == *mlflow* ]] && echo "$pid"
}

health_url() {
  local host="$HOST"
  [[ "$host" == 0.0.0.0 || "$host" == "::" ]] && host=127.0.0.1
  echo "http://$host:$PORT"
}

healthy() {
  if command -v curl >/dev/null; then
    curl -fsS --max-time 2 "$(health_url)/health" >/dev/null 2>&1
  else
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "$(health_url)/health" >/dev/null 2>&1
  fi
}

# --- PostgreSQL ---------------------------------------------------------------------------
pg_prepare() {
  [[ -x "$PG_BIN/initdb" ]] ||
    die "PostgreSQL not found in PG_BIN=$PG_BIN (apt-get install postgresql)"
  "$PYTHON" -c 'import psycopg2' 2>/dev/null ||
    die "$PYTHON has no psycopg2: pip install psycopg2-binary (or BACKEND=sqlite)"
  local sock="$PG_SOCK/.s.PGSQL.$PG_PORT"
  ((${#sock} < 100)) || die "socket path $sock is too long for unix sockets: use a shorter STORE"
  mkdir -p "$PG_ROOT"
  if as_root; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run PostgreSQL"
    chown postgres:postgres "$PG_ROOT"
    chmod o+x "$STORE"
    # From / down, so the message names the first folder that blocks the way.
    local dir="" part parts
    IFS=/ read -ra parts <<<"${STORE#/}"
    for part in "${parts[@]}"; do
      dir="$dir/$part"
      runuser -u postgres -- test -x "$dir" ||
        die "user postgres cannot traverse $dir: chmod o+x $dir, or choose a STORE elsewhere"
    done
  fi
  chmod 700 "$PG_ROOT"
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    say "initdb $PGDATA"
    pg initdb -D "$PGDATA" -U postgres -E UTF8 --no-locale --auth-local=trust \
      --auth-host=reject >"$PG_ROOT/initdb.log" 2>&1 || die "initdb failed: see $PG_ROOT/initdb.log"
    echo "include_if_exists = 'synque.conf'" >>"$PGDATA/postgresql.conf"
  fi
  # Regenerated at every start: no TCP; a socket that only its owner (and root) may open.
  local conf
  conf="listen_addresses = ''
unix_socket_directories = '$PG_SOCK'
unix_socket_permissions = 0700
port = $PG_PORT"
  if as_root; then
    runuser -u postgres -- mkdir -p "$PG_SOCK"
    printf '%s\n' "$conf" | runuser -u postgres -- tee "$PGDATA/synque.conf" >/dev/null
  else
    mkdir -p "$PG_SOCK"
    printf '%s\n' "$conf" >"$PGDATA/synque.conf"
  fi
}

pg_start() {
  pg_prepare
  if pg_running; then
    say "postgres already running ($PGDATA)"
  else
    pg pg_ctl -D "$PGDATA" -l "$PG_ROOT/postgres.log" -w -t 60 start >/dev/null ||
      die "postgres did not start: see $PG_ROOT/postgres.log"
  fi
  # One unprivileged role owns MLflow's two databases (runs, users); created once.
  if [[ -z "$(psql_q "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")" ]]; then
    psql_q "CREATE ROLE mlflow LOGIN" >/dev/null
  fi
  local db
  for db in mlflow mlflow_auth; do
    if [[ -z "$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
      psql_q "CREATE DATABASE $db OWNER mlflow" >/dev/null
    fi
  done
}

pg_stop() {
  if pg_running; then
    pg pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null || die "postgres did not stop"
    say "postgres stopped"
  fi
}

# --- MLflow -------------------------------------------------------------------------------
db_uri() {  # $1: database name (postgres) or file stem (sqlite). SQLAlchemy 2.1 reads a bare
  # postgresql:// as the psycopg 3 driver; synque ships psycopg2, so the URI names it.
  if [[ "$BACKEND" == postgres ]]; then
    echo "postgresql+psycopg2://mlflow@/$1?host=$PG_SOCK&port=$PG_PORT"
  else
    echo "sqlite:///$STORE/$1.db"
  fi
}

auth_env() {  # writes auth.ini (no secret in it) and prints nothing
  local auth_db
  auth_db="$(db_uri basic_auth)"
  [[ "$BACKEND" == postgres ]] && auth_db="$(db_uri mlflow_auth)"
  [[ -s "$STORE/flask_secret" ]] ||
    "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STORE/flask_secret"
  cat >"$STORE/auth.ini" <<EOF
[mlflow]
default_permission = ${DEFAULT_PERMISSION:-EDIT}
database_uri = $auth_db
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = ${AUTH_CACHE_TTL:-60}
EOF
  chmod 600 "$STORE/auth.ini" "$STORE/flask_secret"
}

mlflow_start() {
  if [[ -n "$(mlflow_pid)" ]]; then
    healthy && { say "mlflow already running (pid $(mlflow_pid))"; return; }
    die "mlflow (pid $(mlflow_pid)) runs but $(health_url)/health does not answer: stop it first"
  fi
  local user="${MLFLOW_TRACKING_USERNAME:-admin}"
  local args=(--backend-store-uri "$(db_uri mlflow)" --serve-artifacts
    --artifacts-destination "$STORE/artifacts" --host "$HOST" --port "$PORT"
    --workers "$WORKERS")
  [[ -n "${ALLOWED_HOSTS:-}" ]] && args+=(--allowed-hosts "$ALLOWED_HOSTS")
  local envs=(MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true)
  mkdir -p "$STORE/artifacts"
  if [[ "$AUTH" == on ]]; then
    auth_env
    args+=(--app-name basic-auth)
    envs+=(MLFLOW_AUTH_CONFIG_PATH="$STORE/auth.ini" MLFLOW_AUTH_ADMIN_USERNAME="$user")
    # The password and the CSRF key reach the server as environment variables only.
    export MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$STORE/flask_secret")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  : >>"$MLFLOW_LOG"
  # setsid: mlflow and its workers form one process group, which `stop` signals as a whole.
  env -u MLFLOW_TRACKING_PASSWORD -u MLFLOW_TRACKING_URI "${envs[@]}" \
    setsid "$PYTHON" -m mlflow server "${args[@]}" >>"$MLFLOW_LOG" 2>&1 </dev/null &
  echo $! >"$MLFLOW_PID"
  unset MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
}

mlflow_stop() {
  local pid
  pid="$(mlflow_pid || true)"
  if [[ -n "$pid" ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "mlflow did not stop in 30 s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    say "mlflow stopped"
  fi
  rm -f "$MLFLOW_PID"
}

wait_healthy() {
  local deadline=$((SECONDS + ${HEALTH_TIMEOUT:-120}))
  until healthy; do
    if [[ -z "$(mlflow_pid)" ]]; then
      tail -n 25 "$MLFLOW_LOG" >&2
      stop_all
      die "mlflow exited before answering: see $MLFLOW_LOG"
    fi
    if ((SECONDS > deadline)); then
      stop_all
      die "mlflow did not answer $(health_url)/health in ${HEALTH_TIMEOUT:-120} s: see $MLFLOW_LOG"
    fi
    sleep 0.5
  done
}

# Whether the exported credentials open the server (the admin may predate this password).
check_credentials() {
  local code
  code="$(URL="$(health_url)" "$PYTHON" - <<'EOF'
import base64, os, urllib.error, urllib.request
user = os.environ.get("MLFLOW_TRACKING_USERNAME", "admin")
pair = f"{user}:{os.environ['MLFLOW_TRACKING_PASSWORD']}"
req = urllib.request.Request(
    os.environ["URL"] + "/api/2.0/mlflow/experiments/search?max_results=1",
    headers={"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()},
)
try:
    print(urllib.request.urlopen(req, timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError:
    print("unreachable")
EOF
)"
  [[ "$code" == 200 ]] || say "WARNING: the exported MLFLOW_TRACKING_USERNAME/PASSWORD get HTTP" \
    "$code: the user existed before with another password (MLflow only uses the admin" \
    "password on the first start; change it with MLflow's users/update-password API)"
}

stop_all() {  # whatever runs from this store, whichever BACKEND it was started with
  mlflow_stop
  pg_stop
}

start_all() {
  if [[ "$AUTH" == on ]]; then
    [[ -n "${MLFLOW_TRACKING_PASSWORD:-}" ]] || die "no password for basic auth: export" \
      "MLFLOW_TRACKING_USERNAME=admin and MLFLOW_TRACKING_PASSWORD (12+ characters, e.g." \
      "\`read -rs MLFLOW_TRACKING_PASSWORD; export MLFLOW_TRACKING_PASSWORD\`)," \
      "or run with AUTH=off"
    ((${#MLFLOW_TRACKING_PASSWORD} >= 12)) || die "MLFLOW_TRACKING_PASSWORD is shorter than" \
      "the 12 characters MLflow requires"
    "$PYTHON" -c 'import flask_wtf' 2>/dev/null || die "MLflow's basic-auth app needs" \
      "Flask-WTF: pip install 'mlflow[auth]==<your mlflow version>' (or AUTH=off)"
  elif [[ "$HOST" != 127.0.0.1 && "$HOST" != localhost ]]; then
    say "WARNING: AUTH=off on $HOST: anyone who reaches port $PORT can read and write every run"
  fi
  if [[ -z "$(mlflow_pid)" ]] && healthy; then  # checked before postgres starts for nothing
    die "$(health_url) already answers: another server holds PORT=$PORT"
  fi
  mkdir -p "$STORE"
  chmod go-rw "$STORE"
  local t0=$SECONDS
  [[ "$BACKEND" == postgres ]] && pg_start
  mlflow_start
  wait_healthy
  [[ "$AUTH" == on ]] && check_credentials
  local host="$HOST"
  [[ "$host" == 0.0.0.0 || "$host" == "::" ]] && host="$(hostname -f 2>/dev/null || hostname)"
  say "ready in $((SECONDS - t0)) s: $BACKEND backend, auth $AUTH, store $STORE, logs $MLFLOW_LOG"
  echo "export MLFLOW_TRACKING_URI=http://$host:$PORT"
  if [[ "$AUTH" == on ]]; then
    echo "# and, in every shell that logs runs (the password is not printed here):"
    echo "export MLFLOW_TRACKING_USERNAME=${MLFLOW_TRACKING_USERNAME:-admin}" \
      "MLFLOW_TRACKING_PASSWORD=..."
  fi
}

status_all() {
  local rc=0 pid
  pid="$(mlflow_pid || true)"
  if [[ -n "$pid" ]] && healthy; then
    echo "mlflow: running (pid $pid), $(health_url) healthy"
  elif [[ -n "$pid" ]]; then
    echo "mlflow: running (pid $pid), $(health_url)/health not answering"; rc=3
  else
    echo "mlflow: stopped"; rc=3
  fi
  if [[ -d "$PGDATA" ]]; then
    if pg_running; then echo "postgres: running ($PGDATA)"; else echo "postgres: stopped"; rc=3; fi
  fi
  return "$rc"
}

case "$CMD" in
  start) start_all ;;
  stop) stop_all ;;
  status) status_all ;;
esac
