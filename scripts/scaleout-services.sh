#!/usr/bin/env bash
# Start PostgreSQL 15 and Redis 7 on loopback for the scale-out test run (idempotent) and
# print the settings that point VA Fleet at them, as NAME=value lines.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=main
DB_NAME=vafleet
DB_USER=vafleet
DB_PASSWORD=vafleet
REDIS_PORT=6379

log() { printf '==> %s\n' "$*" >&2; }

start_postgres() {
    if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$PG_VERSION $PG_CLUSTER"; then
        log "Creating PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >/dev/null
    fi
    local state
    state="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}')"
    if [[ "$state" != online* ]]; then
        log "Starting PostgreSQL $PG_VERSION"
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start
    fi
    PG_PORT="$(pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $3}')"
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { echo "vafleet: PostgreSQL did not start; see /var/log/postgresql/." >&2; exit 1; }

    local psql=(runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtA)
    if [[ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]]; then
        # CREATEDB: the test runner creates its own test databases.
        "${psql[@]}" -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
    fi
    if [[ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
        "${psql[@]}" -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    fi
}

start_redis() {
    if [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" != "PONG" ]]; then
        log "Starting Redis on 127.0.0.1:$REDIS_PORT"
        redis-server --daemonize yes --port "$REDIS_PORT" --save "" --appendonly no --bind 127.0.0.1 >/dev/null
    fi
    for _ in $(seq 1 50); do
        [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]] && return 0
        sleep 0.2
    done
    echo "vafleet: Redis did not start on 127.0.0.1:$REDIS_PORT." >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || { echo "vafleet: starting PostgreSQL and Redis needs root." >&2; exit 1; }
start_postgres
start_redis
echo "VAFLEET_DATABASE_URL=postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
echo "VAFLEET_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
