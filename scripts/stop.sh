#!/usr/bin/env bash
# ./vafleet stop: stop the web server and the workers that ./vafleet up started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stopped=0
stop_service web daphne && { say "Stopped the web server."; stopped=1; }
stop_service workers qcluster && { say "Stopped the background workers."; stopped=1; }
[[ $stopped -eq 1 ]] || say "VA Fleet was not running (var dir: $VAFLEET_VAR_DIR)."
