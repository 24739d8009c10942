#!/usr/bin/env bash
# ./vafleet up: set up the embedded default and start the web server and the workers.
# Safe to re-run: what is done is skipped, what runs is left running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

web_pid="$(service_pid web daphne)"
workers_pid="$(service_pid workers qcluster)"
if [[ -n "$web_pid" && -n "$workers_pid" ]]; then
    say "VA Fleet is already running (web pid $web_pid, workers pid $workers_pid)."
    # The URL it was started with, which may differ from this shell's VAFLEET_BIND/PORT.
    say "Open $(cat "$RUN_DIR/url" 2>/dev/null || server_url)   (stop it with ./vafleet stop)"
    exit 0
fi

ensure_venv
ensure_requirements requirements.txt
mkdir -p "$VAFLEET_VAR_DIR" "$RUN_DIR" "$LOG_DIR"

step "Migrating the database"
"$PY" manage.py migrate --noinput >"$LOG_DIR/migrate.log" 2>&1 \
    || { tail -n 30 "$LOG_DIR/migrate.log" >&2; die "migrating the database failed (log: $LOG_DIR/migrate.log)."; }

step "Checking the admin user"
"$PY" scripts/ensure_admin.py

step "Seeding the lab"
"$PY" manage.py lab seed

step "Deploying the built-in appliance (engine injected, serving every lab host)"
"$PY" manage.py fleet local \
    || say "warning: the built-in appliance is not ready (see above); the portal shows it and can deploy it again."

step "Checking the local repository and the demo job"
"$PY" manage.py jobs local

step "Collecting static files"
"$PY" manage.py collectstatic --noinput >"$LOG_DIR/collectstatic.log" 2>&1 \
    || { tail -n 30 "$LOG_DIR/collectstatic.log" >&2; die "collecting static files failed (log: $LOG_DIR/collectstatic.log)."; }

if [[ -z "$web_pid" ]]; then
    if "$PY" scripts/wait_http.py "$(server_url)" 0 >/dev/null 2>&1; then
        die "$BIND:$PORT already answers, but not for this VA Fleet: stop that program or set VAFLEET_PORT."
    fi
    step "Starting the web server on $BIND:$PORT"
    start_service web "$VENV/bin/daphne" -b "$BIND" -p "$PORT" vaproject.asgi:application
fi
if [[ -z "$workers_pid" ]]; then
    step "Starting the background workers"
    start_service workers "$PY" manage.py qcluster
fi

if ! "$PY" scripts/wait_http.py "$(server_url)" 60; then
    tail -n 30 "$LOG_DIR/web.log" >&2 || true
    die "the web server did not answer at $(server_url) within 60 s (log: $LOG_DIR/web.log)."
fi
sleep 1
[[ -n "$(service_pid workers qcluster)" ]] \
    || { tail -n 30 "$LOG_DIR/workers.log" >&2; die "the workers stopped right after starting (log: $LOG_DIR/workers.log)."; }

server_url >"$RUN_DIR/url"
say ""
say "VA Fleet is running: open $(server_url)"
say "Logs: $LOG_DIR   Stop: ./vafleet stop"
