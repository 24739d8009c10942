"""Which VMs a backup job protects: those chosen one by one plus those its rules match."""

from __future__ import annotations

import re

from django.db.models import Q, QuerySet

from appliances.models import Appliance
from inventory.models import VirtualMachine


def vms_of(job) -> QuerySet[VirtualMachine]:
    """Present, non-template VMs of the job (appliance VMs never back themselves up)."""
    match = Q(pk__in=job.vms.values("pk")) | rules_condition(job.rules or {})
    appliance_vms = Appliance.objects.exclude(vm_moref="").values_list("connection_id", "vm_moref")
    own = Q()
    for connection_id, moref in appliance_vms:
        own |= Q(connection_id=connection_id, moref=moref)
    return (VirtualMachine.objects.filter(match, vanished_at=None, is_template=False).exclude(own)
            .select_related("host", "connection").order_by("name").distinct())


def rules_condition(rules: dict) -> Q:
    """The VMs a job's rules match (hosts, folders with their sub-folders, a name pattern) as one condition.
    Empty (`Q()`) for no rules: OR it with the VMs chosen one by one, never filter by it alone."""
    match = Q()
    if rules.get("hosts"):
        match |= Q(host_id__in=rules["hosts"])
    for folder in rules.get("folders") or []:
        folder = folder.strip("/")
        match |= Q(folder=folder) | Q(folder__startswith=folder + "/")
    if rules.get("name"):
        match |= Q(name__iregex=glob_regex(rules["name"]))
    return match


def glob_regex(pattern: str) -> str:
    """'web-*' -> '^web\\-.*$': a regular expression SQLite and PostgreSQL read alike."""
    return "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
