"""API representations of backup repositories, jobs, runs, tasks with their events, and restore points.

The target password and the repository passphrase are write-only: accepted on create and update,
never in a response (`has_password` says whether one is stored). The portal's rules apply, in the
same words (`jobs.forms.repository_problems`).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inventory.models import VirtualMachine
from jobs.forms import CHUNK_SIZES, clean_rules, job_problems, next_run, repository_problems, restore_problems
from jobs.models import BackupJob, JobRun, NotificationSettings, Repository, RestorePoint, Task, TaskEvent
from jobs.notifications import address_problem, split_addresses

MIB = 1 << 20


class RepositorySerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, style={"input_type": "password"},
        help_text="Write-only: the target's password. Omit on update to keep the stored one.")
    passphrase = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, style={"input_type": "password"},
        help_text="Write-only: encrypts the repository. Required on create; cannot change once initialised.")
    has_password = serializers.SerializerMethodField()
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    restore_points = serializers.IntegerField(source="point_count", read_only=True, default=0,
                                              help_text="Restore points of the catalog in this repository.")
    chunk_size = serializers.ChoiceField(choices=[size for size, _ in CHUNK_SIZES], default=MIB, required=False,
                                         help_text="Bytes; a power of two from 64 KiB to 16 MiB. Fixed once "
                                                   "initialised.")
    port = serializers.IntegerField(required=False, allow_null=True, help_text="Empty: the protocol's default.")
    path = serializers.CharField(required=False, allow_blank=True, max_length=500,
                                 help_text="Folder of the repository (SMB: inside the share; local: absolute).")

    class Meta:
        model = Repository
        fields = [
            "id", "name", "kind", "kind_label", "host", "port", "share", "path", "username", "password",
            "has_password", "passphrase", "options", "chunk_size", "initialized_at", "last_test", "last_test_ok",
            "last_test_message", "free_bytes", "restore_points", "created", "updated",
        ]
        read_only_fields = ["initialized_at", "last_test", "last_test_ok", "last_test_message", "free_bytes",
                            "created", "updated"]

    def get_has_password(self, obj: Repository) -> bool:
        if "password" in obj.__dict__:  # loaded or just written
            return bool(obj.__dict__["password"])
        return bool(getattr(obj, "password_stored", False))  # annotated from the raw column: nothing decrypted

    def validate_options(self, value) -> dict:
        if not isinstance(value, dict):
            raise serializers.ValidationError('Options must be a JSON object, for example {"tls_verify": true}.')
        return value

    def validate(self, attrs: dict) -> dict:
        current = self.instance
        values = {name: attrs.get(name, getattr(current, name, None) if current else None)
                  for name in ("kind", "host", "port", "share", "path", "username", "options", "chunk_size")}
        values["password"] = attrs.get("password")
        values["passphrase"] = attrs.get("passphrase")
        stored = current is not None and getattr(current, "password_stored", False)
        problems = repository_problems(values, password_stored=stored, instance=current)
        if problems:
            raise serializers.ValidationError(problems)
        return attrs

    def create(self, validated_data: dict) -> Repository:
        validated_data.setdefault("chunk_size", MIB)
        return super().create(validated_data)

    def update(self, instance: Repository, validated_data: dict) -> Repository:
        # Blank or omitted secrets keep the stored ones (clients never receive them to send back).
        for secret in ("password", "passphrase"):
            if not validated_data.get(secret):
                validated_data.pop(secret, None)
        return super().update(instance, validated_data)


class ProbeResultSerializer(serializers.Serializer):
    appliance = serializers.CharField(help_text="The appliance the test ran on.")
    reachable = serializers.BooleanField()
    writable = serializers.BooleanField()
    free_bytes = serializers.IntegerField(allow_null=True, help_text="Null when the protocol cannot tell.")
    initialized = serializers.BooleanField(help_text="A repository is already there.")
    format_version = serializers.IntegerField(allow_null=True)
    passphrase_ok = serializers.BooleanField(allow_null=True,
                                             help_text="The passphrase opens the repository; null when none is there.")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What failed and what to do, as a sentence.")
    code = serializers.CharField(help_text="Stable code, e.g. target_auth_failed, target_unreachable.")


# --- Backup jobs -------------------------------------------------------------------------------------------


class JobRulesSerializer(serializers.Serializer):
    hosts = serializers.ListField(child=serializers.IntegerField(), required=False, default=list,
                                  help_text="Every VM on these hosts (ids).")
    folders = serializers.ListField(child=serializers.CharField(), required=False, default=list,
                                    help_text="Every VM in these folders (paths; subfolders included).")
    name = serializers.CharField(required=False, allow_blank=True, default="",
                                 help_text="Every VM whose name matches this glob, e.g. web-*.")


class LastRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    created = serializers.DateTimeField()
    finished = serializers.DateTimeField(allow_null=True)


class BackupJobSerializer(serializers.ModelSerializer):
    vms = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=VirtualMachine.objects.filter(is_template=False),
        help_text="VMs chosen one by one (ids from /api/inventory/vms/).")
    rules = JobRulesSerializer(required=False, help_text="Also every VM these rules match.")
    repository_name = serializers.CharField(source="repository.name", read_only=True)
    mode_label = serializers.CharField(source="get_mode_display", read_only=True)
    next_run = serializers.SerializerMethodField(help_text="When the schedule fires next; null when run by hand only "
                                                           "or disabled.")
    last_run = serializers.SerializerMethodField()

    class Meta:
        model = BackupJob
        fields = [
            "id", "name", "repository", "repository_name", "vms", "rules", "schedule", "next_run", "keep_last",
            "keep_daily", "keep_weekly", "keep_monthly", "mode", "mode_label", "compression_level", "use_cbt",
            "verify", "max_parallel", "throttle_mbps", "enabled", "notify_on", "notify_emails", "last_run",
            "created", "updated",
        ]
        read_only_fields = ["created", "updated"]
        extra_kwargs = {"schedule": {"help_text": "Cron expression (five fields, e.g. 0 2 * * *); empty: run by hand "
                                                  "only."}}

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run(self, obj: BackupJob):
        return next_run(obj.schedule) if obj.enabled else None

    @extend_schema_field(LastRunSerializer(allow_null=True))
    def get_last_run(self, obj: BackupJob):
        if hasattr(obj, "last_run_id"):  # annotated by the view
            if obj.last_run_id is None:
                return None
            return {"id": obj.last_run_id, "state": obj.last_run_state, "created": obj.last_run_created,
                    "finished": obj.last_run_finished}
        run = obj.runs.order_by("-created", "-pk").first() if obj.pk else None
        return LastRunSerializer(run).data if run else None

    def validate_schedule(self, value: str) -> str:
        return value.strip()

    def validate_notify_emails(self, value: str) -> str:
        sentence = address_problem(value)
        if sentence:
            raise serializers.ValidationError(sentence)
        return ", ".join(split_addresses(value))

    def validate(self, attrs: dict) -> dict:
        current = self.instance
        rules_in = attrs.get("rules", current.rules if current else {})
        rules, rule_problems = clean_rules(dict(rules_in or {}))
        attrs["rules"] = rules
        values = {name: attrs.get(name, getattr(current, name, None) if current else None)
                  for name in ("schedule", "keep_last", "max_parallel", "compression_level")}
        if current is None or "vms" in attrs or "rules" in self.initial_data:
            values["vms"] = attrs["vms"] if "vms" in attrs else list(current.vms.all()) if current else []
            values["rules"] = rules
        problems: dict = job_problems(values)
        if rule_problems:
            problems["rules"] = rule_problems.get("rules") if set(rule_problems) == {"rules"} else rule_problems
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


class JobVmSerializer(serializers.ModelSerializer):
    host_name = serializers.CharField(source="host.name", read_only=True, default="")
    connection_name = serializers.CharField(source="connection.name", read_only=True)

    class Meta:
        model = VirtualMachine
        fields = ["id", "name", "moref", "connection", "connection_name", "host", "host_name", "folder",
                  "power_state"]


# --- Runs and tasks ----------------------------------------------------------------------------------------


def values_field(choices) -> serializers.CharField:
    """A read-only choice, documented by its values (`state` is in several models: no shared enum)."""
    return serializers.CharField(read_only=True, help_text=f"One of: {', '.join(c.value for c in choices)}.")


class TaskSerializer(serializers.ModelSerializer):
    state = values_field(Task.State)
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    percent = serializers.SerializerMethodField(help_text="bytes_done of bytes_total, 0-100; null before the "
                                                          "size is known.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    spec = serializers.JSONField(source="destination", read_only=True, help_text="A restore's destination.")

    class Meta:
        model = Task
        fields = [
            "id", "kind", "kind_label", "run", "vm", "vm_name", "connection", "repository", "appliance",
            "appliance_name", "state", "state_label", "mode", "mode_reason", "phase", "bytes_done", "bytes_total",
            "percent", "rate", "eta", "message", "error_code", "restore_point", "spec", "result", "cancel_requested",
            "last_seq", "created_by", "created", "started", "finished",
        ]
        read_only_fields = fields

    def get_percent(self, obj: Task) -> float | None:
        if obj.state == Task.State.SUCCEEDED:
            return 100.0
        if not obj.bytes_total:
            return None
        return round(min(100.0, 100.0 * obj.bytes_done / obj.bytes_total), 1)


class JobRunSerializer(serializers.ModelSerializer):
    state = values_field(JobRun.State)
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    task_count = serializers.IntegerField(read_only=True, default=0)
    tasks_succeeded = serializers.IntegerField(read_only=True, default=0)
    tasks_failed = serializers.IntegerField(read_only=True, default=0)
    tasks_active = serializers.IntegerField(read_only=True, default=0, help_text="Queued or running.")

    class Meta:
        model = JobRun
        fields = ["id", "job", "job_name", "config", "state", "state_label", "trigger", "created_by", "message",
                  "cancel_requested", "task_count", "tasks_succeeded", "tasks_failed", "tasks_active", "created",
                  "started", "finished"]
        read_only_fields = fields
        extra_kwargs = {"config": {"help_text": "The job's settings when the run started."}}


class JobRunDetailSerializer(JobRunSerializer):
    tasks = TaskSerializer(many=True, read_only=True)

    class Meta(JobRunSerializer.Meta):
        fields = [*JobRunSerializer.Meta.fields, "tasks"]
        read_only_fields = fields


class TaskEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskEvent
        fields = ["seq", "type", "data", "time"]
        extra_kwargs = {"type": {"help_text": "phase, log, progress, result or error."}}


class TaskEventsSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    state = serializers.CharField(help_text="The task's state now: poll until it is no longer queued or running.")
    phase = serializers.CharField()
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField()
    last_seq = serializers.IntegerField(help_text="The task's newest event; pass it as after= next time.")
    more = serializers.BooleanField(help_text="More events after these (the limit was reached).")
    events = TaskEventSerializer(many=True)


# --- Restore points ----------------------------------------------------------------------------------------


def point_name(point: RestorePoint) -> str:
    return (point.vm_config or {}).get("name") or point.vm_name


class RestorePointSerializer(serializers.ModelSerializer):
    repository_name = serializers.CharField(source="repository.name", read_only=True)
    size_bytes = serializers.SerializerMethodField(help_text="Sum of the backed-up disks' sizes.")
    display_name = serializers.SerializerMethodField(help_text="The VM's name when it was backed up (vm_name is its "
                                                               "stable key in the repository).")

    class Meta:
        model = RestorePoint
        fields = ["id", "repository", "repository_name", "rp_id", "vm", "vm_name", "display_name", "kind",
                  "parent", "taken",
                  "disks", "vm_config", "size_bytes", "logical_bytes", "stored_bytes", "verified", "created"]
        read_only_fields = fields

    def get_display_name(self, obj: RestorePoint) -> str:
        return point_name(obj)

    def get_size_bytes(self, obj: RestorePoint) -> int:
        return sum(int(d.get("size") or 0) for d in obj.disks or [])


class RestoreRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["new_vm", "folder", "original", "disk"], default="new_vm",
                                   help_text="new_vm: create a VM; folder: disk images into a folder on an appliance; "
                                             "original: overwrite the VM's own disks (powered off, confirm); "
                                             "disk: one disk into an existing powered-off VM's disk (confirm).")
    name = serializers.CharField(required=False, allow_blank=True, max_length=80, help_text="new_vm: the VM's name.")
    host = serializers.IntegerField(required=False, allow_null=True, help_text="new_vm: the host to create it on.")
    datastore = serializers.IntegerField(required=False, allow_null=True,
                                         help_text="new_vm: a datastore the host mounts.")
    network = serializers.IntegerField(required=False, allow_null=True,
                                       help_text="new_vm, optional: a network the host sees.")
    folder = serializers.CharField(required=False, allow_blank=True,
                                   help_text="folder: an absolute path on the appliance.")
    appliance = serializers.IntegerField(required=False, allow_null=True,
                                         help_text="Optional: the ready appliance to restore through.")
    confirm = serializers.BooleanField(required=False, default=False,
                                       help_text="original, disk: yes, overwrite those disks.")
    disk = serializers.CharField(required=False, allow_blank=True,
                                 help_text="disk: the disk's name in the restore point.")
    vm = serializers.IntegerField(required=False, allow_null=True, help_text="disk: the VM whose disk is overwritten.")
    target_disk_key = serializers.IntegerField(required=False, allow_null=True,
                                               help_text="disk: the key of that VM's disk to overwrite.")

    IN_PLACE = {"original": ("mode", "confirm", "appliance"),
                "disk": ("mode", "confirm", "appliance", "disk", "vm", "target_disk_key")}

    def validate(self, attrs: dict) -> dict:
        destination = {k: v for k, v in attrs.items() if v not in (None, "")}
        if destination.get("mode") in self.IN_PLACE:  # checked against the VM by the service
            return {k: v for k, v in destination.items() if k in self.IN_PLACE[destination["mode"]]}
        destination.pop("confirm", None)
        if destination.get("mode") == "folder":
            destination = {k: v for k, v in destination.items() if k in ("mode", "folder", "appliance")}
        else:
            destination = {k: v for k, v in destination.items() if k != "folder"}
            if "name" in destination:
                destination["name"] = destination["name"].strip()
        problems = restore_problems(destination)
        if problems:
            raise serializers.ValidationError(problems)
        return destination


# --- Notifications ----------------------------------------------------------------------------------------


class NotificationSettingsSerializer(serializers.ModelSerializer):
    address = serializers.CharField(read_only=True, help_text="Where the e-mails go: email, else the account's.")

    class Meta:
        model = NotificationSettings
        fields = ["email", "address", "on_failure", "daily_summary", "last_summary"]
        read_only_fields = ["last_summary"]
        extra_kwargs = {"email": {"error_messages": {"invalid": "Enter an e-mail address such as ops@example.com, or "
                                                                "an empty string for the account's address."}}}

    def validate(self, attrs: dict) -> dict:
        current = self.instance
        values = {name: attrs.get(name, getattr(current, name)) for name in ("email", "on_failure", "daily_summary")}
        if (values["on_failure"] or values["daily_summary"]) and not values["email"] and not current.user.email:
            raise serializers.ValidationError({"email": "Give the address to send to: the account has no e-mail "
                                                        "address."})
        return attrs
