"""API representations of the signed-in user and of the audit log."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from core.models import AuditEntry
from core.rbac import ADMINISTER, OPERATE, role_of


class MeSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="none, viewer, operator or administrator.")
    can_operate = serializers.SerializerMethodField()
    can_administer = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = [
            "id", "username", "first_name", "last_name", "email", "is_superuser", "role", "can_operate",
            "can_administer",
        ]
        read_only_fields = fields

    def get_role(self, user) -> str:
        return role_of(user).label

    def get_can_operate(self, user) -> bool:
        return role_of(user) >= OPERATE

    def get_can_administer(self, user) -> bool:
        return role_of(user) >= ADMINISTER


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False, write_only=True)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text='Send it as the header "Authorization: Token <token>".')


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = [
            "id", "timestamp", "user", "username", "remote_addr", "via", "action", "object_type", "object_id",
            "object_repr", "message", "changes",
        ]
        read_only_fields = fields
