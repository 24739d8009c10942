#!/usr/bin/env bash
# The peers bench/engine_bench.py measures VA Fleet against: Debian's restic and borgbackup,
# and /usr/bin/time for peak RSS cross-checks.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/system-packages.sh" restic borgbackup time
