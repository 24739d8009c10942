"""API representations of appliances and fleet operations.

Passwords are write-only: accepted on create and update (blank or omitted on update keeps the
stored one) and never in a response. Every configuration is checked by `validation.problems`.
"""

from __future__ import annotations

from rest_framework import serializers

from appliances.forms import without_static
from appliances.models import Appliance, FleetOperation, FleetOperationItem
from appliances.validation import problems
from inventory.api.serializers import NamedRefSerializer
from inventory.models import Connection, Datastore, Host

PASSWORD_FIELDS = ("root_password", "user_password")
# What validation.problems reads.
CHECKED_FIELDS = (
    "name", "connection", "host", "datastore", "network", "addressing", "address", "prefix", "gateway", "dns",
    "hostname", "user_name", "vcpus", "memory_mb", "transport",
)


def values_field(choices) -> serializers.CharField:
    """A read-only choice, documented by its values (`state` and `kind` are in several models: no shared enum)."""
    return serializers.CharField(read_only=True, help_text=f"One of: {', '.join(c.value for c in choices)}.")


def password_field(help_text: str) -> serializers.CharField:
    return serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False,
        style={"input_type": "password"}, help_text=help_text,
    )


class ApplianceSerializer(serializers.ModelSerializer):
    root_password = password_field("Write-only. Required on create; omit or leave blank on update to keep it.")
    user_password = password_field("Write-only. Required on create; omit or leave blank on update to keep it.")
    served_hosts = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=Host.objects.all(),
        help_text="Hosts whose VMs it protects; omitted on create: its own host (one-to-one).",
    )
    host_name = serializers.CharField(source="host.name", read_only=True)
    state = values_field(Appliance.State)
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    free_slots = serializers.IntegerField(read_only=True)

    class Meta:
        model = Appliance
        fields = [
            "id", "name", "connection", "host", "host_name", "datastore", "network", "served_hosts", "addressing",
            "address", "prefix", "gateway", "dns", "hostname", "root_password", "user_name", "user_password",
            "vcpus", "memory_mb", "transport", "port", "state", "state_label", "state_message", "vm_moref",
            "host_key_fingerprint", "deployed_at", "engine_version", "engine_previous", "last_seen",
            "health_checked", "health_message", "free_bytes", "load_1m", "running_jobs", "free_slots",
            "clock_skew_s", "created", "updated",
        ]
        read_only_fields = [
            "state", "state_message", "vm_moref", "host_key_fingerprint", "deployed_at", "engine_version",
            "engine_previous", "last_seen", "health_checked", "health_message", "free_bytes", "load_1m",
            "running_jobs", "clock_skew_s", "created", "updated",
        ]
        # Uniqueness is checked by validation.problems (ignoring case), in its own words.
        extra_kwargs = {name: {"validators": []} for name in ("name", "hostname", "address")}

    def validate(self, attrs: dict) -> dict:
        current = self.instance
        values = {}
        for name in CHECKED_FIELDS:
            if name in attrs:
                values[name] = attrs[name]
            elif current is not None:
                values[name] = getattr(current, name)
            else:
                values[name] = Appliance._meta.get_field(name).get_default()
        for name in PASSWORD_FIELDS:
            if attrs.get(name):
                values[name] = attrs[name]
            elif current is not None:
                attrs.pop(name, None)
                values[name] = None  # kept
            else:
                values[name] = ""
        without_static(values, current)
        for name in ("address", "prefix", "gateway", "dns"):
            if values["addressing"] == Appliance.Addressing.DHCP or name in attrs:
                attrs[name] = values[name]
        served = attrs.get("served_hosts")
        if served is None and current is None and values["host"] is not None:
            attrs["served_hosts"] = served = [values["host"]]
        errors = problems({**values, "served_hosts": served}, current)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class FleetOperationItemSerializer(serializers.ModelSerializer):
    state = values_field(FleetOperationItem.State)
    state_label = serializers.CharField(source="get_state_display", read_only=True)

    class Meta:
        model = FleetOperationItem
        fields = [
            "id", "appliance", "appliance_name", "state", "state_label", "phase", "percent", "message",
            "bytes_sent", "started", "finished",
        ]


class FleetOperationSerializer(serializers.ModelSerializer):
    kind = values_field(FleetOperation.Kind)
    state = values_field(FleetOperation.State)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = FleetOperation
        fields = [
            "id", "kind", "kind_label", "state", "state_label", "message", "created_by", "created", "started",
            "finished",
        ]


class FleetOperationDetailSerializer(FleetOperationSerializer):
    items = FleetOperationItemSerializer(many=True, read_only=True)

    class Meta(FleetOperationSerializer.Meta):
        fields = [*FleetOperationSerializer.Meta.fields, "items"]


class BulkDeploySerializer(serializers.Serializer):
    """One appliance per host, named <base_name>-<host short name>, each serving its own host."""

    connection = serializers.PrimaryKeyRelatedField(queryset=Connection.objects.defer("password"))
    hosts = serializers.PrimaryKeyRelatedField(many=True, queryset=Host.objects.filter(vanished_at__isnull=True))
    base_name = serializers.CharField(max_length=60)
    network_name = serializers.CharField(help_text="A port group name available on every host.")
    datastore = serializers.PrimaryKeyRelatedField(
        queryset=Datastore.objects.all(), required=False, allow_null=True,
        help_text="A datastore every host mounts; omitted or null: each host's datastore with the most free space.",
    )
    addressing = serializers.ChoiceField(choices=Appliance.Addressing.choices, default=Appliance.Addressing.DHCP)
    first_address = serializers.IPAddressField(
        protocol="IPv4", required=False, allow_null=True,
        help_text="Static addressing: each appliance gets the next free address from here.",
    )
    prefix = serializers.IntegerField(required=False, allow_null=True, min_value=8, max_value=30)
    gateway = serializers.IPAddressField(protocol="IPv4", required=False, allow_null=True)
    dns = serializers.CharField(required=False, allow_blank=True, default="")
    root_password = password_field("Write-only; the same on every appliance.")
    user_name = serializers.CharField(max_length=32, default="vauser")
    user_password = password_field("Write-only; the same on every appliance.")
    vcpus = serializers.IntegerField(default=2)
    memory_mb = serializers.IntegerField(default=2048)

    def validate(self, attrs: dict) -> dict:
        connection = attrs["connection"]
        elsewhere = [h.name for h in attrs["hosts"] if h.connection_id != connection.pk]
        if elsewhere:
            raise serializers.ValidationError({"hosts": [f"Not in connection {connection.name}: "
                                                         f"{', '.join(elsewhere)}."]})
        if not attrs["hosts"]:
            raise serializers.ValidationError({"hosts": ["Choose at least one host."]})
        return attrs


class BulkProblemsSerializer(serializers.Serializer):
    detail = serializers.CharField()
    problems = serializers.DictField(
        child=serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
        help_text="By host name, by field: what is wrong with the appliance planned for that host.",
    )


class UpgradeSerializer(serializers.Serializer):
    appliances = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=Appliance.objects.defer(*PASSWORD_FIELDS),
        help_text="Omitted: every deployed appliance.",
    )


class ProtectionOptionSerializer(serializers.Serializer):
    appliance = NamedRefSerializer()
    mode = serializers.ChoiceField(choices=[("hotadd", "hot-add"), ("network", "network")])
    reason = serializers.CharField()


class RefusalSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the action was refused, as a sentence.")
    code = serializers.CharField(help_text="appliance_busy, not_applicable, ...")
