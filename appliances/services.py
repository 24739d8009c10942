"""Fleet operations shared by the portal, the API, the admin and the workers.

Every long action is a FleetOperation run by a django-q2 worker (`appliances.tasks`), with one
item per appliance whose progress is published live (`appliances.live`). An appliance takes part
in one active operation at a time; removing one that still has work is refused with a sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import prefetch_related_objects

from appliances.models import Appliance, FleetOperation, FleetOperationItem
from core.errors import ActionableError

# Other apps (jobs) add callables appliance -> [sentences] naming work that keeps an appliance busy.
WORK_PROBES: list[Callable[[Appliance], list[str]]] = []


class ApplianceBusy(ActionableError):
    """The appliance still has work (a job or a fleet operation): the action is refused."""

    code = "appliance_busy"


class NotApplicable(ActionableError):
    """The action does not apply to the appliance in its current state."""

    code = "not_applicable"


@dataclass
class ProtectionOption:
    appliance: Appliance
    mode: str  # "hotadd" or "network"
    reason: str  # one sentence: why this mode

    @property
    def mode_label(self) -> str:
        return "hot-add" if self.mode == "hotadd" else "network"


DEPLOYABLE = (Appliance.State.DRAFT, Appliance.State.FAILED)
DEPLOYED = (Appliance.State.READY, Appliance.State.UNREACHABLE)


def start_deploy(appliances: Iterable[Appliance], user=None, *, queue: bool = True) -> FleetOperation:
    """Queue the deployment of draft or failed appliances (one item each)."""
    appliances = list(appliances)
    for appliance in appliances:
        if appliance.state not in DEPLOYABLE:
            raise NotApplicable(f"{appliance.name} is {appliance.get_state_display().lower()}: only an appliance "
                                "that is not deployed (or whose deployment failed) can be deployed; use redeploy.")
    return _start(FleetOperation.Kind.DEPLOY, appliances, user, queue)


def start_redeploy(appliance: Appliance, user=None, *, queue: bool = True) -> FleetOperation:
    """Remove the appliance VM and deploy it again with the same configuration."""
    _refuse_if_busy(appliance, "redeployed")
    return _start(FleetOperation.Kind.REDEPLOY, [appliance], user, queue)


def start_remove(appliance: Appliance, user=None, *, queue: bool = True) -> FleetOperation:
    """Undeploy and delete the appliance; raises ApplianceBusy when it still has work."""
    _refuse_if_busy(appliance, "removed")
    return _start(FleetOperation.Kind.REMOVE, [appliance], user, queue)


def start_upgrade(appliances: Iterable[Appliance] | None = None, user=None, *, queue: bool = True) -> FleetOperation:
    """Bring every deployed appliance (or those given) to the current engine bundle."""
    chosen = list(appliances) if appliances is not None else list(Appliance.objects.filter(state__in=DEPLOYED))
    chosen = [a for a in chosen if a.state in DEPLOYED]
    if not chosen:
        raise NotApplicable("No deployed appliance to upgrade: deploy one first.")
    return _start(FleetOperation.Kind.UPGRADE, chosen, user, queue)


def start_health_round(user=None, appliances: Iterable[Appliance] | None = None, *,
                       queue: bool = True) -> FleetOperation:
    """Check every deployed appliance (or those given) now."""
    chosen = list(appliances) if appliances is not None else list(Appliance.objects.filter(state__in=DEPLOYED))
    chosen = [a for a in chosen if a.state in DEPLOYED]
    if not chosen:
        raise NotApplicable("No deployed appliance to check.")
    return _start(FleetOperation.Kind.HEALTH, chosen, user, queue)


def active_items(appliance: Appliance):
    return FleetOperationItem.objects.filter(
        appliance=appliance, operation__state__in=(FleetOperation.State.QUEUED, FleetOperation.State.RUNNING),
        state__in=(FleetOperationItem.State.QUEUED, FleetOperationItem.State.RUNNING))


def work_of(appliance: Appliance) -> list[str]:
    """Sentences naming the work that keeps this appliance busy ([] = free to remove)."""
    found = [f"{item.operation} is in progress on it." for item in active_items(appliance).select_related("operation")]
    if appliance.running_jobs:
        found.append(f"It was running {appliance.running_jobs} engine job(s) at its last health check.")
    for probe in WORK_PROBES:
        found.extend(probe(appliance))
    return found


def _refuse_if_busy(appliance: Appliance, what: str) -> None:
    busy = work_of(appliance)
    if busy:
        raise ApplianceBusy(f"{appliance.name} cannot be {what} now: {' '.join(busy)} Wait for it to finish.")


def _start(kind: str, appliances: list[Appliance], user, queue: bool = True) -> FleetOperation:
    """Create the operation and its items; `queue` hands it to a worker once committed (else the caller runs it)."""
    from django_q.tasks import async_task

    with transaction.atomic():
        if kind not in (FleetOperation.Kind.REMOVE, FleetOperation.Kind.REDEPLOY):  # those checked work_of already
            for appliance in appliances:
                if active_items(appliance).exists():
                    raise ApplianceBusy(f"{appliance.name} already takes part in an operation in progress: "
                                        "wait for it to finish.")
        operation = FleetOperation.objects.create(kind=kind, created_by=user if getattr(user, "pk", None) else None)
        FleetOperationItem.objects.bulk_create(
            FleetOperationItem(operation=operation, appliance=a, appliance_name=a.name) for a in appliances)
        username = getattr(user, "username", "") or ""
        if not queue:
            return operation
        transaction.on_commit(lambda: async_task("appliances.tasks.run_operation_task", operation.pk, username,
                                                 task_name=f"fleet {kind} #{operation.pk}"))
    return operation


def protection_map(vms) -> dict[int, list[ProtectionOption]]:
    """For each VM (id), the deployed appliances serving its host and whether they can hot-add its disks."""
    vms = list(vms)
    prefetch_related_objects(vms, "datastores")
    host_ids = {vm.host_id for vm in vms if vm.host_id}
    appliances = list(Appliance.objects.filter(served_hosts__in=host_ids, state__in=DEPLOYED).distinct()
                      .select_related("host").prefetch_related("served_hosts", "host__datastores"))
    vm_stores = {vm.pk: {(d.pk, d.name) for d in vm.datastores.all()} for vm in vms}
    result: dict[int, list[ProtectionOption]] = {}
    for vm in vms:
        options = []
        for appliance in appliances:
            if vm.host_id not in {h.pk for h in appliance.served_hosts.all()}:
                continue
            mounted = {d.pk for d in appliance.host.datastores.all()}
            missing = sorted(name for pk, name in vm_stores[vm.pk] if pk not in mounted)
            if vm_stores[vm.pk] and not missing:
                options.append(ProtectionOption(appliance, "hotadd", f"Its host {appliance.host.name} mounts every "
                                                                     "datastore of the VM's disks."))
            else:
                why = (f"its host {appliance.host.name} does not mount {', '.join(missing)}" if missing
                       else "the VM has no disk on a known datastore")
                options.append(ProtectionOption(appliance, "network", f"Reads over the network: {why}."))
        options.sort(key=lambda o: (o.mode != "hotadd", not o.appliance.usable, -o.appliance.free_slots,
                                    o.appliance.name))
        result[vm.pk] = options
    return result


def protection_for_vm(vm) -> list[ProtectionOption]:
    """Which deployed appliances can protect this VM, and how (hot-add first, usable first)."""
    return protection_map([vm])[vm.pk]
