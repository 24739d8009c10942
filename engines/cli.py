"""The engine process: a JSON job spec on stdin, JSON-lines events on stdout, logs on stderr.

Exit code 0 on success. SIGTERM (or SIGINT) asks the running operation to stop at the next
chunk or file: a backup then writes no restore point, a prune stops between two deletions
(the repository stays consistent), and either ends with an `error` event coded `cancelled`
(exit code 143), its repository lock released.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback

from engines import __version__
from engines.api import run_job
from engines.contract import JobSpec, encode_event, error_event, log_event, result_event
from engines.errors import EngineError
from engines.repository.verify import describe

log = logging.getLogger("engines")


class EventWriter:
    """Writes whole event lines to stdout from any thread."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        line = encode_event(event) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines", description="VA Fleet engine: reads a JSON job spec "
                                     "on stdin (or from JOB_FILE) and writes JSON-lines events on stdout.")
    parser.add_argument("job_file", nargs="?", help="read the job spec from this file instead of stdin")
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emit = EventWriter()
    cancel = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        if not cancel.is_set():
            cancel.set()
            # Not emit() here: the handler runs in the main thread, which may hold the writer's lock.
            notice = log_event("warning", f"Received {signal.Signals(signum).name}: stopping cleanly.")
            threading.Thread(target=emit, args=(notice,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.job_file:
            with open(args.job_file, "rb") as fh:
                text = fh.read()
        else:
            text = sys.stdin.buffer.read()
        job = JobSpec.from_json(text)
        emit(log_event("info", f"engine {__version__}: {job.operation} starting"))
        result = run_job(job, emit=emit, cancel=cancel)
    except EngineError as exc:
        if cancel.is_set() and exc.code != "cancelled":
            exc.code, exc.exit_code = "cancelled", 143
        emit(error_event(exc.code, str(exc)))
        return exc.exit_code
    except OSError as exc:
        log.error("unexpected OS error", exc_info=True)
        emit(error_event("os_error", f"The engine failed on {exc.filename or 'a system call'}: {exc.strerror or exc}."))
        return 1
    except Exception as exc:  # noqa: BLE001 - the server must always get an error event
        traceback.print_exc(file=sys.stderr)
        emit(error_event("internal_error", f"The engine failed unexpectedly ({type(exc).__name__}: {exc}); "
                         "the appliance's engine log has the details."))
        return 1
    if job.operation == "verify" and not result["ok"]:
        for problem in result["problems"]:
            emit(log_event("error", describe(problem)))
        first = describe(result["problems"][0])
        emit(error_event("verify_failed", f"Verify found {len(result['problems'])} problem(s) in the repository; "
                         f"first: {first}. Restore those disks from another restore point and run a new backup.",
                         problems=result["problems"]))
        return 1
    emit(result_event(job.operation, **result))
    return 0
