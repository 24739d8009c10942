#!/usr/bin/env bash
# ./vafleet status: say what runs; exit 0 only when the web server and the workers both run.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

web_pid="$(service_pid web daphne)"
workers_pid="$(service_pid workers qcluster)"
if [[ -n "$web_pid" ]]; then say "web server: running (pid $web_pid) at $(server_url)"; else say "web server: stopped"; fi
if [[ -n "$workers_pid" ]]; then say "workers:    running (pid $workers_pid)"; else say "workers:    stopped"; fi
[[ -n "$web_pid" && -n "$workers_pid" ]]
