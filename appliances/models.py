"""The appliance fleet: each VA's configuration, deployment, assignment and health.

An `Appliance` is configured first (state `draft`), then deployed through its connection's
deployer (`appliances.deployers`), bootstrapped over SSH and given the current engine; it then
serves the hosts in `served_hosts` (one-to-one: its own host; one-to-many: several hosts).
Long actions on several VAs (bulk deploy, fleet upgrade, health round) are `FleetOperation`s with
one `FleetOperationItem` per VA, whose progress the portal shows live.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from core.secrets import EncryptedTextField
from core.signals import audited
from inventory.models import Connection, Datastore, Host, Network


@audited
class Appliance(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Not deployed"
        DEPLOYING = "deploying", "Deploying"
        READY = "ready", "Ready"
        UNREACHABLE = "unreachable", "Unreachable"
        FAILED = "failed", "Deployment failed"
        REMOVING = "removing", "Removing"

    class Addressing(models.TextChoices):
        STATIC = "static", "Static"
        DHCP = "dhcp", "DHCP"

    class Transport(models.TextChoices):
        SSH = "ssh", "SSH"
        LOCAL = "local", "Local (this machine)"

    name = models.CharField(max_length=80, unique=True, help_text="Name of the appliance VM on the hypervisor.")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="appliances")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="deployed_appliances",
                             help_text="The host the appliance VM runs on.")
    datastore = models.ForeignKey(Datastore, on_delete=models.PROTECT, related_name="appliances",
                                  help_text="Where the appliance VM's files live.")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="appliances",
                                help_text="Port group (standard or distributed) of its network card.")
    addressing = models.CharField(max_length=6, choices=Addressing.choices, default=Addressing.DHCP)
    address = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True, unique=True,
                                           help_text="Static address; with DHCP, the address last seen.")
    prefix = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Network prefix length, e.g. 24.")
    gateway = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True)
    dns = models.CharField(max_length=200, blank=True, help_text="DNS servers, comma separated.")
    hostname = models.CharField(max_length=63, unique=True)
    root_password = EncryptedTextField(help_text="Used once, to bootstrap the fleet key; never shown again.")
    user_name = models.CharField(max_length=32, default="vauser")
    user_password = EncryptedTextField()
    vcpus = models.PositiveSmallIntegerField(default=2, help_text="Also the number of jobs it runs at once.")
    memory_mb = models.PositiveIntegerField(default=2048)
    transport = models.CharField(max_length=10, choices=Transport.choices, default=Transport.SSH)
    port = models.PositiveIntegerField(default=22)
    served_hosts = models.ManyToManyField(Host, blank=True, related_name="appliances",
                                          help_text="Hosts whose VMs this appliance protects.")

    # What deployment produced.
    state = models.CharField(max_length=12, choices=State.choices, default=State.DRAFT, db_index=True)
    state_message = models.CharField(max_length=500, blank=True)
    vm_moref = models.CharField(max_length=80, blank=True, help_text="The appliance VM on the hypervisor.")
    deploy_handle = models.JSONField(default=dict, blank=True, help_text="Deployer-specific data.")
    host_key = models.CharField(max_length=800, blank=True, help_text="Pinned SSH host key ('type base64').")
    host_key_fingerprint = models.CharField(max_length=80, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True)

    # Health, as last checked.
    engine_version = models.CharField(max_length=80, blank=True)
    engine_previous = models.CharField(max_length=80, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True, help_text="Last successful health check.")
    health_checked = models.DateTimeField(null=True, blank=True)
    health_message = models.CharField(max_length=500, blank=True)
    free_bytes = models.BigIntegerField(null=True, blank=True, help_text="Free space in the engine directory.")
    load_1m = models.FloatField(null=True, blank=True)
    running_jobs = models.PositiveSmallIntegerField(default=0)
    clock_skew_s = models.FloatField(null=True, blank=True, help_text="Appliance clock minus server clock.")

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("appliances:detail", args=[self.pk])

    @property
    def slots(self) -> int:
        return self.vcpus

    @property
    def free_slots(self) -> int:
        return max(0, self.vcpus - self.running_jobs)

    @property
    def deployed(self) -> bool:
        return self.state in (self.State.READY, self.State.UNREACHABLE)

    @property
    def usable(self) -> bool:
        """May the dispatcher give it work."""
        return self.state == self.State.READY


class FleetOperation(models.Model):
    class Kind(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        REDEPLOY = "redeploy", "Redeploy"
        REMOVE = "remove", "Remove"
        UPGRADE = "upgrade", "Engine upgrade"
        HEALTH = "health", "Health check"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        PARTIAL = "partial", "Partly failed"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    message = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("appliances:operation", args=[self.pk])

    @property
    def active(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)


class FleetOperationItem(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    operation = models.ForeignKey(FleetOperation, on_delete=models.CASCADE, related_name="items")
    appliance = models.ForeignKey(Appliance, null=True, on_delete=models.SET_NULL, related_name="operation_items")
    appliance_name = models.CharField(max_length=80, help_text="Kept when the appliance is removed.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    phase = models.CharField(max_length=120, blank=True, help_text="What it is doing now.")
    percent = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    bytes_sent = models.BigIntegerField(default=0)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["appliance_name"]

    def __str__(self) -> str:
        return f"{self.operation}: {self.appliance_name}"
