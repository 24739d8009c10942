"""Hypervisor connections and what they contain.

Every inventory object belongs to one connection and is identified there by its managed
object reference (`moref`). A re-sync updates rows in place (database ids stay stable) and
sets `vanished_at` on objects the hypervisor no longer reports.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from core.secrets import EncryptedTextField
from core.signals import audited


@audited
class Connection(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "Never synced"
        SYNCING = "syncing", "Syncing"
        OK = "ok", "OK"
        ERROR = "error", "Error"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, help_text="Connector plugin: vsphere or lab.")
    host = models.CharField(max_length=255, blank=True, help_text="vCenter or ESXi address; lab: empty.")
    port = models.PositiveIntegerField(default=443)
    username = models.CharField(max_length=150, blank=True)
    password = EncryptedTextField(blank=True)
    tls_verify = models.BooleanField(default=False, help_text="Verify the certificate against trusted CAs.")
    tls_thumbprint = models.CharField(
        max_length=95, blank=True, help_text="Pinned SHA-256 fingerprint of the server certificate."
    )
    options = models.JSONField(default=dict, blank=True, help_text="Connector-specific settings.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    status_message = models.CharField(max_length=500, blank=True)
    product = models.CharField(max_length=200, blank=True, help_text="What the server says it is.")
    last_sync_started = models.DateTimeField(null=True, blank=True)
    last_sync_finished = models.DateTimeField(null=True, blank=True)
    last_sync_seconds = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("inventory:connection_detail", args=[self.pk])


class InventoryObject(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    moref = models.CharField(max_length=80, help_text="Managed object reference on the hypervisor.")
    name = models.CharField(max_length=255, db_index=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)
    vanished_at = models.DateTimeField(
        null=True, blank=True, help_text="When a sync no longer found it on the hypervisor."
    )

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def vanished(self) -> bool:
        return self.vanished_at is not None


class Datacenter(InventoryObject):
    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="datacenter_moref")]


class Cluster(InventoryObject):
    datacenter = models.ForeignKey(Datacenter, on_delete=models.CASCADE, related_name="clusters")

    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="cluster_moref")]


class Host(InventoryObject):
    datacenter = models.ForeignKey(Datacenter, on_delete=models.CASCADE, related_name="hosts")
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="hosts")
    connection_state = models.CharField(max_length=20, blank=True)
    power_state = models.CharField(max_length=20, blank=True)
    in_maintenance = models.BooleanField(default=False)
    product = models.CharField(max_length=100, blank=True)
    cpu_cores = models.PositiveIntegerField(default=0)
    memory_bytes = models.BigIntegerField(default=0)

    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="host_moref")]

    def get_absolute_url(self) -> str:
        return reverse("inventory:host_detail", args=[self.pk])


class Datastore(InventoryObject):
    datacenter = models.ForeignKey(Datacenter, on_delete=models.CASCADE, related_name="datastores")
    type = models.CharField(max_length=20, blank=True, help_text="VMFS, NFS, vsan, local folder...")
    url = models.CharField(max_length=500, blank=True)
    capacity_bytes = models.BigIntegerField(default=0)
    free_bytes = models.BigIntegerField(default=0)
    accessible = models.BooleanField(default=True)
    hosts = models.ManyToManyField(Host, blank=True, related_name="datastores", help_text="Hosts that mount it.")

    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="datastore_moref")]

    def get_absolute_url(self) -> str:
        return reverse("inventory:datastore_detail", args=[self.pk])

    @property
    def shared(self) -> bool:
        return self.hosts.count() > 1


class Network(InventoryObject):
    class Kind(models.TextChoices):
        STANDARD = "standard", "Standard port group"
        DISTRIBUTED = "distributed", "Distributed port group"
        OPAQUE = "opaque", "Opaque network"

    datacenter = models.ForeignKey(Datacenter, on_delete=models.CASCADE, related_name="networks")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.STANDARD)
    switch = models.CharField(max_length=255, blank=True, help_text="Distributed switch name.")
    vlan = models.CharField(max_length=40, blank=True)
    hosts = models.ManyToManyField(Host, blank=True, related_name="networks")

    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="network_moref")]


class VirtualMachine(InventoryObject):
    class PowerState(models.TextChoices):
        ON = "poweredOn", "Powered on"
        OFF = "poweredOff", "Powered off"
        SUSPENDED = "suspended", "Suspended"

    datacenter = models.ForeignKey(Datacenter, on_delete=models.CASCADE, related_name="vms")
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="vms")
    uuid = models.CharField(max_length=64, blank=True, db_index=True, help_text="Instance UUID.")
    power_state = models.CharField(max_length=12, choices=PowerState.choices, blank=True, db_index=True)
    guest_os = models.CharField(max_length=200, blank=True)
    num_cpu = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField(default=0)
    folder = models.CharField(max_length=500, blank=True, help_text="Folder path under the datacenter's VM folder.")
    tags = models.JSONField(default=list, blank=True)
    is_template = models.BooleanField(default=False)
    cbt_enabled = models.BooleanField(default=False, help_text="Changed block tracking on the VM.")
    provisioned_bytes = models.BigIntegerField(default=0, help_text="Sum of its disks' capacities.")
    datastores = models.ManyToManyField(Datastore, blank=True, related_name="vms")
    networks = models.ManyToManyField(Network, blank=True, related_name="vms")

    class Meta(InventoryObject.Meta):
        constraints = [models.UniqueConstraint(fields=["connection", "moref"], name="vm_moref")]
        indexes = [models.Index(fields=["connection", "name"]), models.Index(fields=["vanished_at", "name"])]

    def get_absolute_url(self) -> str:
        return reverse("inventory:vm_detail", args=[self.pk])


class VirtualDisk(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    key = models.IntegerField(help_text="Device key within the VM.")
    label = models.CharField(max_length=100, blank=True)
    file_name = models.CharField(max_length=1000, help_text="Backing file, e.g. [ds1] vm/vm.vmdk")
    datastore = models.ForeignKey(Datastore, null=True, blank=True, on_delete=models.SET_NULL, related_name="disks")
    capacity_bytes = models.BigIntegerField(default=0)
    thin = models.BooleanField(default=False)
    cbt_enabled = models.BooleanField(default=False)
    disk_mode = models.CharField(max_length=40, blank=True)
    vanished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vm", "key"]
        constraints = [models.UniqueConstraint(fields=["vm", "key"], name="disk_key")]

    def __str__(self) -> str:
        return f"{self.vm.name}: {self.label or self.key}"
