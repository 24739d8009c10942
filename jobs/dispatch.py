"""Pick the appliance that backs up a VM: by assignment, hot-add possibility and free slots, within limits.

Slots and limits count the tasks running across ALL jobs: one slot per vCPU on each appliance, and at
most `VAFLEET_LIMIT_PER_HOST` / `_PER_DATASTORE` / `_PER_REPOSITORY` tasks at once on one ESXi host,
one datastore and one repository.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from django.conf import settings

from appliances.services import protection_for_vm
from core.errors import ActionableError
from jobs.models import Task


class NoAppliance(ActionableError):
    """No appliance can ever take this VM (as configured): the task fails with this sentence."""

    code = "no_appliance"


@dataclass
class Choice:
    appliance: object
    mode: str  # "hotadd" or "network"
    reason: str


@dataclass
class Load:
    """Running tasks per appliance, host, datastore and repository (across every job)."""

    appliances: Counter
    hosts: Counter
    datastores: Counter
    repositories: Counter

    @classmethod
    def now(cls) -> Load:
        load = cls(Counter(), Counter(), Counter(), Counter())
        running = Task.objects.filter(state=Task.State.RUNNING).select_related("vm").prefetch_related("vm__datastores")
        for task in running:
            load.add(task)
        return load

    def add(self, task: Task) -> None:
        self.appliances[task.appliance_id] += 1
        self.repositories[task.repository_id] += 1
        if task.vm is not None:
            self.hosts[task.vm.host_id] += 1
            for datastore in task.vm.datastores.all():
                self.datastores[datastore.pk] += 1

    def limited(self, task: Task) -> str:
        """Why the task must wait for another one to finish ('' when it may start)."""
        vm = task.vm
        if self.repositories[task.repository_id] >= settings.VAFLEET_LIMIT_PER_REPOSITORY:
            return "repository"
        if vm is not None and self.hosts[vm.host_id] >= settings.VAFLEET_LIMIT_PER_HOST:
            return "host"
        if vm is not None and any(self.datastores[d.pk] >= settings.VAFLEET_LIMIT_PER_DATASTORE
                                  for d in vm.datastores.all()):
            return "datastore"
        return ""


def choose(task: Task, policy: str, load: Load) -> Choice | None:
    """The appliance for this task now, None to wait for a slot, NoAppliance when none ever fits."""
    options = [o for o in protection_for_vm(task.vm) if o.appliance.usable]
    if policy == "hotadd":
        options = [o for o in options if o.mode == "hotadd"]
    if not options:
        raise NoAppliance(_why_none(task, policy))
    if load.limited(task):
        return None
    for option in options:
        appliance = option.appliance
        if load.appliances[appliance.pk] >= appliance.slots:
            continue
        if policy == "network" and option.mode == "hotadd":
            return Choice(appliance, "network", "The job asks for network mode.")
        if option.mode == "hotadd":
            return Choice(appliance, "hotadd", f"Hot-add on {appliance.name}: {option.reason}")
        return Choice(appliance, "network", f"Network mode on {appliance.name}. {option.reason}")
    return None


def _why_none(task: Task, policy: str) -> str:
    vm = task.vm
    serving = list(protection_for_vm(vm))
    if not serving:
        return (f"No appliance serves host {vm.host.name if vm.host else '(unknown)'} of VM {vm.name}: deploy one "
                "there, or add the host to an appliance's served hosts.")
    if all(not o.appliance.usable for o in serving):
        names = ", ".join(f"{o.appliance.name} ({o.appliance.get_state_display().lower()})" for o in serving)
        return f"No appliance serving VM {vm.name} is ready now: {names}."
    return (f"The job allows hot-add only, but no ready appliance serving VM {vm.name} runs on a host that mounts "
            "its datastores: allow network mode, or deploy an appliance on such a host.")
