#!/usr/bin/env bash
# ./vafleet test [PYTEST ARGS]: the whole test suite, as CI runs it.
#   1. dev requirements and the Debian packages the tests need (installed when absent)
#   2. ruff check .
#   3. pytest on the embedded default (SQLite, database channel layer, ORM broker)
#   4. pytest again on PostgreSQL 15 + Redis 7 (scale-out), started here when not running
# Without PYTEST ARGS the required integration suites must all run (a skip fails the run).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

started=$SECONDS
ensure_venv
ensure_requirements requirements-dev.txt
"$ROOT/scripts/system-packages.sh"

declare -A outcome
step "ruff check ."
if "$VENV/bin/ruff" check .; then outcome[ruff]="passed"; else outcome[ruff]="FAILED (lint errors above)"; fi

workers="${VAFLEET_TEST_WORKERS:-2}"
# faulthandler_timeout: a test still running after 240 s prints every thread's stack (finds hangs).
pytest_args=(-p no:cacheprovider -n "$workers" -o faulthandler_timeout=240 "$@")
# A stuck test must not stall CI: each run gets a time budget (SIGINT, so pytest still reports).
budget="${VAFLEET_TEST_RUN_TIMEOUT:-720}"
timeout_args=(--signal=INT --kill-after=60 "$budget")
# At a terminal, stay in its process group so Ctrl-C reaches pytest.
[[ -t 0 ]] && timeout_args=(--foreground "${timeout_args[@]}")
required_embedded="vcsim,browser,storage,appliance"
required_scaleout="vcsim,browser,scaleout"
if [[ $# -gt 0 ]]; then
    # A chosen subset: do not demand every required suite.
    required_embedded=""
    required_scaleout=""
fi

# One run of pytest in a fresh var dir; never stops the script, records the outcome.
run_pytest() {
    local label="$1" required="$2" status=0 var_dir
    shift 2
    var_dir="$(mktemp -d "${TMPDIR:-/tmp}/vafleet-test-$label.XXXXXX")"
    step "pytest, $label configuration (var dir $var_dir)"
    env "$@" VAFLEET_VAR_DIR="$var_dir" VAFLEET_REQUIRED_SUITES="$required" \
        timeout "${timeout_args[@]}" "$VENV/bin/pytest" "${pytest_args[@]}" || status=$?
    case $status in
        0) outcome[$label]="passed" ;;
        124 | 137) outcome[$label]="FAILED: did not finish within $budget s (a stuck test? see above)" ;;
        5) outcome[$label]="FAILED: pytest collected no tests (exit 5)" ;;
        *) outcome[$label]="FAILED (pytest exit $status)" ;;
    esac
    [[ $status -ne 0 ]] || rm -rf "$var_dir"
}

run_pytest embedded "$required_embedded" -u VAFLEET_DATABASE_URL -u VAFLEET_REDIS_URL

step "Starting PostgreSQL and Redis for the scale-out run"
scaleout_env=()
while IFS= read -r line; do
    # A database and Redis index of this run's own, so parallel runs on one machine stay apart.
    case "$line" in
        VAFLEET_DATABASE_URL=*) scaleout_env+=("${line%/*}/vafleet_run$$") ;;
        VAFLEET_REDIS_URL=*) scaleout_env+=("${line%/*}/$(($$ % 16))") ;;
    esac
done < <("$ROOT/scripts/scaleout-services.sh")
[[ ${#scaleout_env[@]} -eq 2 ]] || die "PostgreSQL and Redis could not be started for the scale-out run."
# Queued tasks left by an earlier run are signed with another secret key: start empty.
redis_url="${scaleout_env[1]#VAFLEET_REDIS_URL=}"
redis-cli -u "$redis_url" FLUSHDB >/dev/null || die "could not empty Redis database $redis_url for the scale-out run."
# The engine, target and appliance suites use no database, channel layer or broker: they run
# once, in the embedded pass; the scale-out pass runs everything that touches the server.
server_only=(--ignore=tests/engines --ignore=tests/sources --ignore=tests/targets --ignore=tests/appliances)
[[ $# -gt 0 ]] && server_only=()
pytest_args+=("${server_only[@]}")
run_pytest scaleout "$required_scaleout" "${scaleout_env[@]}"

# An interrupted run leaves its test databases behind: drop this run's.
pg_port="${scaleout_env[0]##*:}"
pg_port="${pg_port%%/*}"
while IFS= read -r database; do
    if [[ -n "$database" ]]; then runuser -u postgres -- dropdb -p "$pg_port" --if-exists "$database" || true; fi
done < <(runuser -u postgres -- psql -p "$pg_port" -qtAc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'test_vafleet_run$$%'" 2>/dev/null || true)

say ""
say "Test summary ($((SECONDS - started)) s):"
failed=0
for label in ruff embedded scaleout; do
    say "  $label: ${outcome[$label]}"
    [[ "${outcome[$label]}" == passed ]] || failed=1
done
exit $failed
