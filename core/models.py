from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """Who changed what, when and from where. Written by core.audit, never edited."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"
        LOGIN = "login"
        LOGOUT = "logout"
        LOGIN_FAILED = "login_failed"
        OPERATION = "operation"

    timestamp = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    via = models.CharField(max_length=16, blank=True, help_text="portal, api, admin, worker or cli")
    action = models.CharField(max_length=16, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=100, blank=True, db_index=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    message = models.CharField(max_length=500, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.object_repr}"


class ChannelMessage(models.Model):
    """A message in flight through the embedded channel layer (core.channel_layer); deleted on delivery."""

    channel = models.CharField(max_length=100)
    # The channel name up to and including "!" for process-specific channels: what one process polls.
    inbox = models.CharField(max_length=100)
    payload = models.BinaryField()
    expires = models.FloatField(db_index=True, help_text="Unix time after which the message is dropped.")

    class Meta:
        indexes = [models.Index(fields=["inbox", "id"], name="channel_message_inbox")]

    def __str__(self) -> str:
        return self.channel


class ChannelGroupMember(models.Model):
    """A channel's membership of a group in the embedded channel layer."""

    group = models.CharField(max_length=100)
    channel = models.CharField(max_length=100, db_index=True)
    expires = models.FloatField(db_index=True, help_text="Unix time after which the membership lapses.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "channel"], name="channel_group_member")]

    def __str__(self) -> str:
        return f"{self.group}: {self.channel}"
