"""Health of every appliance: one cheap round trip per VA, on a schedule.

Pure part (no Django): `probe(transport)` runs the VA-side installer's `status` once and turns its
JSON line into a `HealthReport` (engine version, free space, load, running jobs, CPUs and clock
skew = VA clock minus the midpoint of the round trip on the server).

Django part: `check_appliance(appliance)` connects with a short timeout, probes and stores the
result on the Appliance. A VA that cannot be reached (no answer, refused login, changed host key)
becomes `unreachable` with the transport's sentence; once reachable again it is `ready`. Only
deployed appliances (ready/unreachable) are touched. `check_all()` checks every deployed VA
concurrently; `health_round_task()` is the django-q2 entry point of the "appliance health"
schedule (migration 0002).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from appliances.transports import CommandResult, Transport, TransportError

log = logging.getLogger(__name__)

HEALTH_CONNECT_TIMEOUT = 5.0  # seconds; a health check never waits the full deployment timeout
STATUS_TIMEOUT = 20.0  # seconds for the `status` command itself
MAX_CLOCK_SKEW_S = 30.0
MIN_FREE_BYTES = 100 << 20  # room to unpack the next engine release next to the current one
SCHEDULE_NAME = "appliance health"


@dataclass
class HealthReport:
    reachable: bool
    message: str
    engine_version: str | None = None
    engine_previous: str | None = None
    free_bytes: int | None = None
    load_1m: float | None = None
    running_jobs: int | None = None
    clock_skew_s: float | None = None
    cpus: int | None = None
    warnings: list[str] = field(default_factory=list)


def _status_event(result: CommandResult) -> dict | None:
    for line in result.stdout.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "status":
                return event
    return None


def _no_status(transport: Transport, result: CommandResult, engine_dir: str, python: str) -> str:
    """The sentence for a VA that answered but gave no status line."""
    stderr = result.stderr.decode(errors="replace").strip()
    errors = []
    for line in result.stdout.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(line)
            if event.get("event") == "error":
                errors.append(event["message"])
    if result.exit == 127:
        return (f"{transport.label} has no `{python}`: the appliance image needs Python 3 to run the VA Fleet "
                "installer and engine.")
    if "can't open file" in stderr or "No such file" in stderr:
        return (f"{transport.label} answers over SSH but has no VA Fleet installer in {engine_dir}/ (it was never "
                "bootstrapped): bootstrap it to install the fleet key and the installer.")
    if result.exit == 64:
        return (f"The VA Fleet installer on {transport.label} is older than this server (it has no `status` "
                "command): bootstrap it again to update the installer.")
    detail = errors[-1] if errors else (stderr[-300:] or "no output")
    return f"{transport.label} did not report its status (exit {result.exit}: {detail})."


def warnings_for(report: HealthReport) -> list[str]:
    """Sentences for a reachable VA that can work but needs attention."""
    found = []
    if report.engine_version is None:
        found.append("No engine is installed yet: it is injected before the appliance's first job.")
    if report.free_bytes is not None and report.free_bytes < MIN_FREE_BYTES:
        found.append(f"Only {report.free_bytes >> 20} MiB free in the engine directory, {MIN_FREE_BYTES >> 20} MiB "
                     "are needed for an engine upgrade: free space on the appliance.")
    if report.clock_skew_s is not None and abs(report.clock_skew_s) > MAX_CLOCK_SKEW_S:
        side = "ahead of" if report.clock_skew_s > 0 else "behind"
        found.append(f"Its clock is {abs(report.clock_skew_s):.0f} s {side} the server's: fix its time "
                     "synchronisation (NTP); log and restore point times depend on it.")
    return found


def probe(transport: Transport, engine_dir: str = "vafleet", python: str = "python3") -> HealthReport:
    """One round trip (`install.py status`) on an open transport; never raises for the VA's fault."""
    started = time.time()
    try:
        result = transport.run([python, f"{engine_dir}/install.py", "status"], timeout=STATUS_TIMEOUT)
    except TransportError as exc:
        return HealthReport(False, str(exc))
    finished = time.time()
    event = _status_event(result)
    if event is None:
        message = _no_status(transport, result, engine_dir, python)
        return HealthReport(True, message, warnings=[message])
    try:
        va_time = float(event["time"])
        report = HealthReport(
            True, "", engine_version=event.get("version"), engine_previous=event.get("previous"),
            free_bytes=int(event["free_bytes"]),
            load_1m=None if event.get("load_1m") is None else float(event["load_1m"]),
            running_jobs=int(event.get("running_jobs") or 0),
            clock_skew_s=round(va_time - (started + finished) / 2, 3),
            cpus=None if event.get("cpus") is None else int(event["cpus"]))
    except (KeyError, TypeError, ValueError) as exc:
        message = f"{transport.label} sent a status line this server cannot read ({exc!r}): bootstrap it again."
        return HealthReport(True, message, warnings=[message])
    report.warnings = warnings_for(report)
    report.message = " ".join(report.warnings)
    return report


# --- Django part -------------------------------------------------------------------------------------------


def _deployed_states():
    from appliances.models import Appliance

    return (Appliance.State.READY, Appliance.State.UNREACHABLE)


def _connect(appliance) -> HealthReport | Transport:
    import paramiko
    from django.conf import settings

    from appliances.connect import transport_for

    timeout = min(float(settings.VAFLEET_CONNECT_TIMEOUT), HEALTH_CONNECT_TIMEOUT)
    try:
        return transport_for(appliance, connect_timeout=timeout)
    except TransportError as exc:
        return HealthReport(False, str(exc))
    except (OSError, EOFError, paramiko.SSHException) as exc:
        return HealthReport(False, f"Cannot reach appliance {appliance.name} ({exc}): check that it runs and "
                                   "its SSH service answers.")


def check_appliance(appliance) -> HealthReport:
    """Probe one deployed appliance and store the result; never raises for the VA's fault."""
    from appliances.connect import ENGINE_DIR, python_for

    if appliance.state not in _deployed_states():
        return HealthReport(False, f"Appliance {appliance.name} is {appliance.get_state_display().lower()}: only "
                                   "deployed appliances are checked.")
    connected = _connect(appliance)
    if isinstance(connected, HealthReport):
        report = connected
    else:
        with connected:
            report = probe(connected, ENGINE_DIR, python_for(appliance))
    if report.reachable and report.cpus is not None and report.cpus < appliance.vcpus:
        report.warnings.append(f"It has {report.cpus} CPUs but is set to run {appliance.vcpus} jobs at once: "
                               "give it more vCPUs or lower its job count.")
        report.message = " ".join(report.warnings)
    _store(appliance, report)
    _publish(appliance)
    return report


def _publish(appliance) -> None:
    from appliances import live

    appliance.refresh_from_db()
    live.publish_appliance(appliance)


def _store(appliance, report: HealthReport) -> None:
    """Write the health fields, and the state when it flips, unless the appliance left ready/unreachable."""
    from django.db import transaction
    from django.utils import timezone

    from appliances.models import Appliance
    from core import audit
    from core.models import AuditEntry

    now = timezone.now()
    values = {"health_checked": now, "health_message": report.message[:500]}
    if report.reachable:
        values.update(state=Appliance.State.READY, last_seen=now, engine_version=report.engine_version or "",
                      engine_previous=report.engine_previous or "", free_bytes=report.free_bytes,
                      load_1m=report.load_1m, running_jobs=report.running_jobs or 0,
                      clock_skew_s=report.clock_skew_s)
    else:
        values.update(state=Appliance.State.UNREACHABLE, state_message=report.message[:500])
    # A queryset update: health readings change every round and are not configuration changes, so they
    # stay out of the audit log; a state flip is recorded there explicitly below.
    with transaction.atomic():
        before = (Appliance.objects.select_for_update().filter(pk=appliance.pk)
                  .values_list("state", flat=True).first())
        if before not in _deployed_states():
            return  # removed, or redeployed meanwhile: that action owns the state now
        if before == Appliance.State.UNREACHABLE and report.reachable:
            values["state_message"] = ""
        Appliance.objects.filter(pk=appliance.pk).update(**values)
    for name, value in values.items():
        setattr(appliance, name, value)
    if before != values["state"]:
        if report.reachable:
            message = f"Appliance {appliance.name} is reachable again."
        else:
            message = f"Appliance {appliance.name} is unreachable: {report.message}"
        log.warning("%s", message)
        audit.record(AuditEntry.Action.UPDATE, appliance, message=message,
                     changes={"state": [str(before), str(values["state"])]})


def check_all(max_workers: int = 16) -> dict:
    """Check every deployed appliance, `max_workers` at a time; returns counts."""
    from django.db import connection

    from appliances.models import Appliance

    started = time.monotonic()
    pks = list(Appliance.objects.filter(state__in=_deployed_states()).values_list("pk", flat=True))

    def one(pk: int) -> str:
        try:
            appliance = Appliance.objects.filter(pk=pk).first()
            if appliance is None or appliance.state not in _deployed_states():
                return "skipped"
            report = check_appliance(appliance)
            if not report.reachable:
                return "unreachable"
            return "warnings" if report.warnings else "ready"
        except Exception:  # noqa: BLE001 - one appliance's failure must not stop the round
            log.exception("Health check of appliance #%s failed", pk)
            return "errors"
        finally:
            connection.close()  # this thread's own connection

    outcomes = []
    if Appliance.objects.filter(pk__in=pks, transport=Appliance.Transport.SSH).exists():
        from appliances.keys import ssh_key_path

        ssh_key_path()  # created (if ever needed) here, not by several threads at once
    if pks:
        with ThreadPoolExecutor(max(1, min(max_workers, len(pks))), thread_name_prefix="health") as pool:
            outcomes = list(pool.map(one, pks))
    counts = {key: outcomes.count(key) for key in ("ready", "warnings", "unreachable", "skipped", "errors")}
    counts["checked"] = len(outcomes) - counts["skipped"]
    counts["seconds"] = round(time.monotonic() - started, 3)
    return counts


def health_round_task() -> dict:
    """The scheduled health round (and the sweep of operations whose worker died); a round still running on
    this server makes the next one a no-op."""
    from appliances import var_dir

    with open(var_dir() / "health-round.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"skipped_round": True, "reason": "The previous health round is still running."}
        try:
            from appliances.operations import sweep_interrupted

            interrupted = sweep_interrupted()
            return {**check_all(), "interrupted_operations": interrupted}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
