"""Whether each VM is protected: a recent restore point (protected), a job but none (stale), or no job at all.

Everything is a query condition (Exists subqueries and the union of the jobs' rules), so the VM list
and the dashboard count thousands of VMs in one SQL query; the jobs' rules cost one more.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from appliances.models import Appliance
from inventory.models import VirtualMachine
from jobs.models import BackupJob, RestorePoint
from jobs.selection import rules_condition

PROTECTED, STALE, UNPROTECTED = "protected", "stale", "unprotected"
CHOICES = (
    (PROTECTED, "Protected (recent restore point)"),
    (STALE, "In a job, no recent restore point"),
    (UNPROTECTED, "In no backup job"),
)


def rpo_cutoff() -> datetime:
    return timezone.now() - timedelta(hours=settings.VAFLEET_RPO_HOURS)


def candidates() -> Q:
    """Present VMs that should be backed up: not templates, not the appliances' own VMs."""
    own = Exists(Appliance.objects.filter(connection_id=OuterRef("connection_id"), vm_moref=OuterRef("moref")))
    return Q(vanished_at=None, is_template=False) & ~Q(own)


def recent_point() -> Q:
    return Q(Exists(RestorePoint.objects.filter(vm=OuterRef("pk"), taken__gte=rpo_cutoff())))


def in_a_job() -> Q:
    """VMs some backup job selects: the union of every job's `jobs.selection.vms_of`, as one condition."""
    match = Q(Exists(BackupJob.vms.through.objects.filter(virtualmachine=OuterRef("pk"))))
    hosts, folders, names = set(), set(), set()
    for rules in BackupJob.objects.exclude(rules={}).values_list("rules", flat=True):
        hosts.update((rules or {}).get("hosts") or [])
        folders.update(folder.strip("/") for folder in (rules or {}).get("folders") or [])
        if (rules or {}).get("name"):
            names.add(rules["name"])
    match |= rules_condition({"hosts": sorted(hosts), "folders": sorted(folders)})  # each host and folder once
    for name in sorted(names):
        match |= rules_condition({"name": name})
    return match


def condition(state: str) -> Q:
    """The VM filter for one protection state (PROTECTED, STALE or UNPROTECTED)."""
    if state == PROTECTED:
        return candidates() & recent_point()
    if state == STALE:
        return candidates() & ~recent_point() & in_a_job()
    if state == UNPROTECTED:
        return candidates() & ~recent_point() & ~in_a_job()
    raise ValueError(f"Unknown protection state {state!r}: use {PROTECTED}, {STALE} or {UNPROTECTED}.")


def counts() -> dict[str, int]:
    """How many VMs are protected, stale and unprotected (two queries)."""
    recent, job = recent_point(), in_a_job()
    return VirtualMachine.objects.filter(candidates()).aggregate(
        protected=Count("pk", filter=recent),
        stale=Count("pk", filter=~recent & job),
        unprotected=Count("pk", filter=~recent & ~job),
    )
