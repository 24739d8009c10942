"""API representations of backup repositories.

The target password and the repository passphrase are write-only: accepted on create and update,
never in a response (`has_password` says whether one is stored). The portal's rules apply, in the
same words (`jobs.forms.repository_problems`).
"""

from __future__ import annotations

from rest_framework import serializers

from jobs.forms import CHUNK_SIZES, repository_problems
from jobs.models import Repository

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
