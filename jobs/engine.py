"""Run one engine operation on an appliance: the JSON job spec on the engine's stdin, its JSON-lines
events back, the `result` event returned or the engine's `error` raised as a sentence with its code.

Shared by everything that runs the engine (repository tests and initialisation, jobs): only the events
pass through this process, never disk data.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable

from django import db

from appliances.connect import ENGINE_DIR, python_for
from appliances.injection import run_engine
from core.errors import ActionableError

log = logging.getLogger(__name__)
CANCEL_POLL_SECONDS = 1.0

# Engine error codes that mean the settings are wrong (the request, not a system we talk to).
SETTINGS_CODES = frozenset({"bad_job_spec", "bad_request", "target_bad_spec", "target_bad_name", "target_bad_path"})


class EngineFailed(ActionableError):
    """The engine ended with an error event (its sentence and code) or without a result."""

    def __init__(self, message: str, code: str = "engine_error", event: dict | None = None):
        super().__init__(message)
        self.code = code
        self.event = event or {}
        if code in SETTINGS_CODES:
            self.http_status = 400


def python_of(transport, appliance=None) -> str:
    """The Python that runs the engine on the appliance behind `transport`."""
    if appliance is not None:
        return python_for(appliance)
    return sys.executable if getattr(transport, "name", "") == "local" else "python3"


def run_engine_operation(transport, appliance, spec: dict, on_event: Callable[[dict], None] | None = None, *,
                         timeout: float | None = None,
                         cancelled: Callable[[], bool] | None = None) -> tuple[dict, list[dict]]:
    """Run `spec` on the appliance's engine; returns (result event, every event in order).

    `on_event` sees each event as it arrives. `timeout` (seconds) bounds the whole run: past it the
    engine is stopped (SIGTERM, then SIGKILL) and EngineFailed says so (code "timeout"). `cancelled()` is
    polled every second by a watcher thread, so a silent engine (waiting for a lock, a slow target) is
    stopped too; once it turns true the engine is asked to stop and the run ends in EngineFailed "cancelled".
    Raises EngineFailed with the engine's own sentence and code when it reports an error.
    """
    where = f"appliance {appliance.name}" if appliance is not None else getattr(transport, "label", "the appliance")
    stream = run_engine(transport, [], json.dumps(spec).encode(), ENGINE_DIR, python_of(transport, appliance))
    timed_out = threading.Event()
    watchdog = None
    if timeout:
        def stop() -> None:
            timed_out.set()
            stream.terminate()
            killer = threading.Timer(5, stream.kill)  # one that ignores SIGTERM
            killer.daemon = True
            killer.start()

        watchdog = threading.Timer(timeout, stop)
        watchdog.daemon = True
        watchdog.start()
    stopping, ended = threading.Event(), threading.Event()
    watcher = None
    if cancelled is not None:
        watcher = threading.Thread(target=_watch_cancel, args=(stream, cancelled, stopping, ended), daemon=True)
        watcher.start()
    events: list[dict] = []
    result, error = None, None
    try:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            events.append(event)
            if on_event is not None:
                on_event(event)
            if event.get("type") == "result":
                result = event
            elif event.get("type") == "error":
                error = event
    finally:
        ended.set()
        if watcher is not None:
            watcher.join(10)  # its database connection is closed before the run goes on
        if watchdog is not None:
            watchdog.cancel()
        try:
            code = stream.wait(60)
        except Exception:  # noqa: BLE001 - a stream that will not end: kill it, the run has failed anyway
            stream.kill()
            code = -9
    operation = spec.get("operation", "operation")
    if timed_out.is_set():
        raise EngineFailed(f"The engine's {operation} on {where} did not finish within {timeout:g} s and was "
                           "stopped: check that the appliance can reach the target (address, port, firewall).",
                           "timeout")
    if stopping.is_set():
        raise EngineFailed(f"The engine's {operation} on {where} was cancelled; nothing half-written was kept.",
                           "cancelled")
    if error is not None:
        raise EngineFailed(str(error.get("message") or f"The engine's {operation} on {where} failed."),
                           str(error.get("code") or "engine_error"), error)
    if result is None:
        stderr = stream.stderr.decode(errors="replace").strip()[-300:]
        raise EngineFailed(f"The engine's {operation} on {where} ended (exit {code}) without a result"
                           f"{': ' + stderr if stderr else ''}. Check the appliance's engine log.", "engine_error")
    return result, events


def _watch_cancel(stream, cancelled: Callable[[], bool], stopping: threading.Event, ended: threading.Event,
                  every: float = CANCEL_POLL_SECONDS) -> None:
    """Ask the engine to stop once `cancelled()` turns true (looked at once at the start, then every `every`
    seconds); the engine stops cleanly at its next chunk or wait."""
    try:
        while not ended.is_set():
            if cancelled():
                stopping.set()
                stream.terminate()
                return
            ended.wait(every)
    except Exception:  # noqa: BLE001 - a failed poll (database away) leaves the run to end by itself
        log.warning("Cancel watcher stopped", exc_info=True)
    finally:
        db.connection.close()  # this thread's own database connection
