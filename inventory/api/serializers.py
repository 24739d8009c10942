"""API representations of connections and inventory objects.

The hypervisor password is write-only: it is accepted on create and update and never
appears in any response (`has_password` says whether one is stored).
"""

from __future__ import annotations

import re
from pathlib import Path

from rest_framework import serializers

from inventory.connectors import LABELS, REGISTRY
from inventory.connectors.base import canonical_thumbprint
from inventory.models import (
    Cluster,
    Connection,
    Datacenter,
    Datastore,
    Host,
    Network,
    VirtualDisk,
    VirtualMachine,
)

HOST = re.compile(r"[A-Za-z0-9.\-:\[\]_]+")


class ConnectionSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only. Omit on update to keep the stored password.",
    )
    tls_thumbprint = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="SHA-256 fingerprint of the server certificate to pin (AA:BB:... as the connection test shows it).",
    )
    has_password = serializers.SerializerMethodField()
    kind_label = serializers.SerializerMethodField()
    port = serializers.IntegerField(
        min_value=1,
        max_value=65535,
        required=False,
        error_messages={
            "min_value": "Port must be between 1 and 65535.",
            "max_value": "Port must be between 1 and 65535.",
            "invalid": "Port must be a whole number between 1 and 65535.",
        },
    )

    class Meta:
        model = Connection
        fields = [
            "id", "name", "kind", "kind_label", "host", "port", "username", "password", "has_password",
            "tls_verify", "tls_thumbprint", "options", "status", "status_message", "product",
            "last_sync_started", "last_sync_finished", "last_sync_seconds", "created", "updated",
        ]
        read_only_fields = [
            "status", "status_message", "product", "last_sync_started", "last_sync_finished",
            "last_sync_seconds", "created", "updated",
        ]

    def get_has_password(self, obj: Connection) -> bool:
        if "password" in obj.__dict__:  # just written
            return bool(obj.__dict__["password"])
        # Annotated by the view from the raw column: no decryption needed.
        return bool(getattr(obj, "password_stored", False))

    def get_kind_label(self, obj: Connection) -> str:
        return LABELS.get(obj.kind, obj.kind)

    def validate_kind(self, value: str) -> str:
        if value not in REGISTRY:
            raise serializers.ValidationError(
                f"Unknown connection type {value!r}; choose one of: {', '.join(sorted(REGISTRY))}."
            )
        return value

    def validate_host(self, value: str) -> str:
        return value.strip()

    def validate_tls_thumbprint(self, value: str) -> str:
        # Accept what tools print (colons, spaces or none) and store the one form the connector compares.
        try:
            return canonical_thumbprint(value)
        except ValueError:
            raise serializers.ValidationError(
                "The thumbprint must be the certificate's SHA-256 fingerprint: 32 hex byte pairs "
                "separated by colons, like AB:CD:...; copy it from the connection test."
            ) from None

    def validate_options(self, value) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError('Options must be a JSON object, for example {"datacenter": "DC1"}.')
        return value

    def validate(self, attrs: dict) -> dict:
        current = self.instance
        kind = attrs.get("kind", getattr(current, "kind", None))
        if kind == "vsphere":
            self._validate_vsphere(attrs, current)
        elif kind == "lab":
            self._validate_lab(attrs.get("options", getattr(current, "options", None)) or {})
        return attrs

    def _validate_vsphere(self, attrs: dict, current: Connection | None) -> None:
        # The same rules as the portal's form, in the same words.
        host = attrs.get("host", getattr(current, "host", ""))
        errors = {}
        if not host:
            errors["host"] = "Enter the address of the vCenter or ESXi host, e.g. vcenter.example.com."
        elif not HOST.fullmatch(host):
            errors["host"] = "The address may contain only a host name or an IP address, without http:// or a path."
        if not attrs.get("username", getattr(current, "username", "")):
            errors["username"] = "Enter the user name to log in with, e.g. administrator@vsphere.local."
        stored = current is not None and getattr(current, "password_stored", False)
        if not attrs.get("password") and not stored:
            errors["password"] = "Enter the password of this user."
        if errors:
            raise serializers.ValidationError(errors)

    def _validate_lab(self, options: dict) -> None:
        root = options.get("root")
        if root is None:
            return  # the lab of this server (VAFLEET_LAB_ROOT)
        if not isinstance(root, str) or not Path(root).is_absolute():
            raise serializers.ValidationError({"options": "Give the lab folder as an absolute path in options.root."})
        if not Path(root).is_dir():
            hint = f"seed a lab there first (manage.py lab seed --root {root})"
            raise serializers.ValidationError({"options": f"The folder {root} does not exist: {hint}."})

    def update(self, instance: Connection, validated_data: dict) -> Connection:
        # An omitted or blank password keeps the stored one (clients never receive it to send back).
        if not validated_data.get("password"):
            validated_data.pop("password", None)
        return super().update(instance, validated_data)


class ConnectionTestResultSerializer(serializers.Serializer):
    product = serializers.CharField()
    version = serializers.CharField(allow_blank=True)
    thumbprint = serializers.CharField(allow_blank=True, help_text="SHA-256 of the server certificate.")


class ConnectionErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What failed and what to do, as a sentence.")
    code = serializers.CharField()
    thumbprint = serializers.CharField(
        required=False, help_text="Certificate fingerprint to pin (untrusted or mismatched certificate)."
    )


class MessageSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ConnectionCountsSerializer(serializers.Serializer):
    new = serializers.IntegerField()
    syncing = serializers.IntegerField()
    ok = serializers.IntegerField()
    error = serializers.IntegerField()


class VmCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    powered_on = serializers.IntegerField()
    powered_off = serializers.IntegerField()


class SummarySerializer(serializers.Serializer):
    """Counts of what is present now (vanished objects left out)."""

    connections = ConnectionCountsSerializer(help_text="Connections by status.")
    hosts = serializers.IntegerField()
    datastores = serializers.IntegerField()
    vms = VmCountsSerializer()


class NamedRefSerializer(serializers.Serializer):
    """A related object by id and name."""

    id = serializers.IntegerField()
    name = serializers.CharField()


class InventoryObjectSerializer(serializers.ModelSerializer):
    vanished = serializers.BooleanField(read_only=True)

    common_fields = ["id", "connection", "moref", "name", "first_seen", "last_seen", "vanished_at", "vanished"]


class DatacenterSerializer(InventoryObjectSerializer):
    class Meta:
        model = Datacenter
        fields = InventoryObjectSerializer.common_fields


class ClusterSerializer(InventoryObjectSerializer):
    class Meta:
        model = Cluster
        fields = [*InventoryObjectSerializer.common_fields, "datacenter"]


class HostSerializer(InventoryObjectSerializer):
    cluster_name = serializers.CharField(source="cluster.name", read_only=True, default=None)

    class Meta:
        model = Host
        fields = [
            *InventoryObjectSerializer.common_fields, "datacenter", "cluster", "cluster_name", "connection_state",
            "power_state", "in_maintenance", "product", "cpu_cores", "memory_bytes",
        ]


class DatastoreSerializer(InventoryObjectSerializer):
    hosts = NamedRefSerializer(many=True, read_only=True, help_text="Hosts that mount this datastore.")
    shared = serializers.SerializerMethodField()

    class Meta:
        model = Datastore
        fields = [
            *InventoryObjectSerializer.common_fields, "datacenter", "type", "url", "capacity_bytes",
            "free_bytes", "accessible", "hosts", "shared",
        ]

    def get_shared(self, obj: Datastore) -> bool:
        # Counted from the prefetched hosts: no query per row.
        return len(obj.hosts.all()) > 1


class NetworkSerializer(InventoryObjectSerializer):
    class Meta:
        model = Network
        fields = [*InventoryObjectSerializer.common_fields, "datacenter", "kind", "switch", "vlan"]


class VirtualDiskSerializer(serializers.ModelSerializer):
    datastore_name = serializers.CharField(source="datastore.name", read_only=True, default=None)

    class Meta:
        model = VirtualDisk
        fields = [
            "id", "key", "label", "file_name", "datastore", "datastore_name", "capacity_bytes", "thin",
            "cbt_enabled", "disk_mode", "vanished_at",
        ]


class VirtualMachineSerializer(InventoryObjectSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True, default=None)
    datastores = NamedRefSerializer(many=True, read_only=True)
    networks = NamedRefSerializer(many=True, read_only=True)

    class Meta:
        model = VirtualMachine
        fields = [
            *InventoryObjectSerializer.common_fields, "datacenter", "host", "host_name", "uuid", "power_state",
            "guest_os", "num_cpu", "memory_mb", "folder", "tags", "is_template", "cbt_enabled",
            "provisioned_bytes", "datastores", "networks",
        ]


class VirtualMachineDetailSerializer(VirtualMachineSerializer):
    disks = VirtualDiskSerializer(many=True, read_only=True)

    class Meta(VirtualMachineSerializer.Meta):
        fields = [*VirtualMachineSerializer.Meta.fields, "disks"]
