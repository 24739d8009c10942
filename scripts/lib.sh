# shellcheck shell=bash
# Shared helpers of the vafleet command (sourced, not run).
# Paths: the virtualenv is .venv beside this checkout; state, logs and pid files live in the var dir.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export VAFLEET_VAR_DIR="${VAFLEET_VAR_DIR:-$ROOT/var}"
RUN_DIR="$VAFLEET_VAR_DIR/run"
LOG_DIR="$VAFLEET_VAR_DIR/log"
BIND="${VAFLEET_BIND:-127.0.0.1}"
PORT="${VAFLEET_PORT:-8000}"

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf 'vafleet: %s\n' "$*" >&2; exit 1; }

server_url() {
    local host="$BIND"
    # A wildcard bind is reached through loopback on this machine.
    case "$host" in 0.0.0.0 | "::" | "[::]") host=127.0.0.1 ;; esac
    [[ "$host" == *:* && "$host" != \[* ]] && host="[$host]"
    printf 'http://%s:%s/' "$host" "$PORT"
}

# Create .venv with python3 when it is missing (installs Debian's python3-venv if venv cannot).
ensure_venv() {
    [[ -x "$PY" ]] && return 0
    command -v python3 >/dev/null || die "python3 is not installed: install Python 3.11 (Debian: apt-get install python3) and run again."
    step "Creating the virtualenv in $VENV"
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        [[ $(id -u) -eq 0 ]] || die "python3 cannot create a virtualenv: install python3-venv (as root) and run again."
        "$ROOT/scripts/system-packages.sh" python3-venv
        python3 -m venv "$VENV"
    fi
}

# Install a requirements file into .venv unless exactly these files were installed before.
ensure_requirements() {
    local file="$1" stamp key
    stamp="$VENV/.vafleet-$(basename "$file").sha256"
    key="$(cd "$ROOT" && cat "$file" requirements.txt | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
        return 0
    fi
    step "Installing $(basename "$file") into the virtualenv"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/$file"
    printf '%s\n' "$key" >"$stamp"
}

# pid of a background service we started, if it still runs; empty otherwise.
service_pid() {
    local name="$1" marker="$2" pid_file="$RUN_DIR/$1.pid" pid
    [[ -f "$pid_file" ]] || return 0
    pid="$(cat "$pid_file")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$marker"; then
        printf '%s' "$pid"
    fi
}

# Start a command in its own session (so stop can end it and its children), logging to var/log.
start_service() {
    local name="$1"
    shift
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    # Not a process group leader here, so setsid execs in place and $! is the service's pid.
    (cd "$ROOT" && exec setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null) &
    printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
}

# Stop a service: TERM to its main process (which stops its own children in order), then,
# after a grace period, KILL whatever is left of its process group.
stop_service() {
    local name="$1" marker="$2" pid
    pid="$(service_pid "$name" "$marker")"
    if [[ -z "$pid" ]]; then
        rm -f "$RUN_DIR/$name.pid"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/$name.pid"
    return 0
}
