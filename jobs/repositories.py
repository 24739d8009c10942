"""Repositories seen from an appliance: test one (the engine's `probe`) and initialise it before its first backup.

Appliances write backups straight to the repository, so a repository is tested FROM an appliance, with
the settings the engine will use, never from this server. `test_repository` uses the appliance it is
given, else the first ready appliance reached over SSH (it sees the network the way backup jobs do);
the built-in appliance of this machine (transport `local`) only when no other is ready: what this
server can reach says little about what the deployed appliances can reach. A `local` repository is a
folder on the appliance that tests it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from appliances.actions import SENTENCE_ERRORS, engine_ready_transport
from appliances.models import Appliance
from core.errors import ActionableError
from core.secrets import SecretUnreadable
from jobs.engine import EngineFailed, run_engine_operation
from jobs.models import Repository
from jobs.targets import target_spec

GIB = 1 << 30


def probe_timeout() -> float:
    """Seconds a repository test may take on the appliance (network targets time out after 30 s per reply)."""
    return float(getattr(settings, "VAFLEET_REPOSITORY_TEST_SECONDS", 90))


class RepositoryProblem(ActionableError):
    """A repository cannot be used as configured; the message says why and what to do."""

    code = "repository_problem"

    def __init__(self, message: str, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status


class NoApplianceForTest(RepositoryProblem):
    code = "no_appliance"
    http_status = 400


@dataclass
class ProbeResult:
    """What a successful test found, and the sentence the portal shows."""

    appliance: str
    free_bytes: int | None
    initialized: bool
    format_version: int | None
    passphrase_ok: bool | None
    message: str
    ok: bool = True


def choose_appliance() -> Appliance:
    """The appliance that tests a repository when none is chosen (see the module's docstring)."""
    ready = Appliance.objects.filter(state=Appliance.State.READY)
    appliance = (ready.exclude(transport=Appliance.Transport.LOCAL).order_by("name").first()
                 or ready.order_by("name").first())
    if appliance is None:
        raise NoApplianceForTest("No appliance is ready to test the repository from: deploy an appliance (or bring "
                                 "one back to Ready), then test again.")
    return appliance


def probe_spec(repository: Repository) -> dict:
    try:
        return {"operation": "probe", "target": target_spec(repository), "passphrase": repository.passphrase or ""}
    except SecretUnreadable as exc:
        raise RepositoryProblem(f"The repository's stored password or passphrase cannot be read ({exc}): enter "
                                "them again in its settings.", "secret_unreadable", 500) from exc


def describe(result: dict, appliance: Appliance) -> str:
    free = result.get("free_bytes")
    space = f"{free / GIB:,.1f} GiB free" if free is not None else "free space unknown (the protocol cannot tell)"
    if not result.get("initialized"):
        state = "no repository there yet: the first backup creates it"
    elif result.get("passphrase_ok"):
        state = f"a repository (format {result.get('format_version')}) that the passphrase opens"
    else:
        state = f"a repository (format {result.get('format_version')})"
    return f"Reachable and writable from appliance {appliance.name}; {space}; {state}."


def _store(repository: Repository, **values) -> None:
    """Status, not configuration: written without a model save (no audit entry, no secret decrypted)."""
    Repository.objects.filter(pk=repository.pk).update(**values)
    for name, value in values.items():
        setattr(repository, name, value)


def _record(repository: Repository, ok: bool, message: str, free_bytes: int | None = None) -> None:
    values = {"last_test": timezone.now(), "last_test_ok": ok, "last_test_message": message[:500]}
    if ok:
        values["free_bytes"] = free_bytes
    _store(repository, **values)


def test_repository(repository: Repository, appliance: Appliance | None = None, *,
                    timeout: float | None = None) -> ProbeResult:
    """Probe the repository from an appliance; stores the outcome on the repository.

    Returns what was found; raises an ActionableError (its sentence also stored) when the appliance
    cannot be used or the target refuses (unreachable, login refused, no permission, wrong passphrase...).
    """
    try:
        appliance = appliance or choose_appliance()
        if not appliance.usable:
            raise NoApplianceForTest(f"Appliance {appliance.name} is {appliance.get_state_display().lower()}, not "
                                     "ready: choose a ready appliance, or check this one first.")
        spec = probe_spec(repository)
        with engine_ready_transport(appliance) as transport:
            result, _ = run_engine_operation(transport, appliance, spec,
                                             timeout=timeout if timeout is not None else probe_timeout())
    except EngineFailed as exc:
        # The engine's own sentence, then where it was seen from.
        _record(repository, False, f"{exc} (tested from appliance {appliance.name})")
        raise
    except SENTENCE_ERRORS as exc:
        _record(repository, False, str(exc))
        raise
    message = describe(result, appliance)
    _record(repository, True, message, result.get("free_bytes"))
    return ProbeResult(appliance=appliance.name, free_bytes=result.get("free_bytes"),
                       initialized=bool(result.get("initialized")), format_version=result.get("format_version"),
                       passphrase_ok=result.get("passphrase_ok"), message=message)


test_repository.__test__ = False  # a service, not a test case: pytest must not collect it where imported


def ensure_initialized(repository: Repository, transport, appliance: Appliance | None = None) -> None:
    """Before a backup: create the repository (engine `init`) if the target holds none yet; once.

    A repository already on the target is adopted when the passphrase opens it; a wrong passphrase is
    an error (it is never initialised again over it). Once initialised, nothing is checked here: a
    repository that vanished since fails the backup with the engine's sentence instead of being
    silently recreated somewhere else.
    """
    if repository.initialized_at is not None:
        return
    spec = probe_spec(repository)
    found, _ = run_engine_operation(transport, appliance, spec, timeout=probe_timeout())
    if not found.get("initialized"):
        init = {"operation": "init", "target": spec["target"], "passphrase": spec["passphrase"],
                "options": {"chunk_size": int(repository.chunk_size)}}
        try:
            run_engine_operation(transport, appliance, init, timeout=probe_timeout())
        except EngineFailed as exc:
            if exc.code != "repository_exists":
                raise
            # Initialised meanwhile by another task: adopt it once its passphrase checks out.
            found, _ = run_engine_operation(transport, appliance, spec, timeout=probe_timeout())
    values = {"initialized_at": timezone.now()}
    if found.get("free_bytes") is not None:
        values["free_bytes"] = found["free_bytes"]
    _store(repository, **values)
