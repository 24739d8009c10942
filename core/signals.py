"""Audit every change of configuration models (those registered in AUDITED) and of logins."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from core import audit
from core.models import AuditEntry
from core.secrets import EncryptedTextField, SecretUnreadable

AUDITED: set[type] = set()


def audited(model):
    """Class decorator: changes to this model are written to the audit log."""
    AUDITED.add(model)
    return model


def _is_audited(sender) -> bool:
    return sender in AUDITED


@receiver(pre_save)
def _remember_before(sender, instance, raw=False, **kwargs):
    if raw or not _is_audited(sender) or instance.pk is None:
        return
    try:
        old = sender._default_manager.filter(pk=instance.pk).first()
    except SecretUnreadable:  # the secrets key changed: let the secret be entered again, compare the rest
        secret_fields = [f.name for f in sender._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        old = sender._default_manager.filter(pk=instance.pk).defer(*secret_fields).first()
    instance._audit_before = audit.field_values(old) if old else None


@receiver(post_save)
def _log_save(sender, instance, created, raw=False, **kwargs):
    if raw or not _is_audited(sender):
        return
    after = audit.field_values(instance)
    if created:
        audit.record(AuditEntry.Action.CREATE, instance, changes={k: [None, v] for k, v in after.items()})
        return
    changes = audit.diff(getattr(instance, "_audit_before", None) or {}, after)
    changes.pop("last_login", None)
    if changes:
        audit.record(AuditEntry.Action.UPDATE, instance, changes=changes)


@receiver(post_delete)
def _log_delete(sender, instance, **kwargs):
    if _is_audited(sender):
        audit.record(AuditEntry.Action.DELETE, instance)


@receiver(m2m_changed)
def _log_membership(sender, instance, action, pk_set, model, **kwargs):
    if action not in ("post_add", "post_remove", "post_clear") or not _is_audited(type(instance)):
        return
    names = sorted(str(o) for o in model._default_manager.filter(pk__in=pk_set or []))
    audit.record(AuditEntry.Action.UPDATE, instance, changes={f"{model._meta.model_name}s {action[5:]}": names})


@receiver(user_logged_in)
def _log_login(sender, request, user, **kwargs):
    audit.record(AuditEntry.Action.LOGIN, user, actor=audit.Actor(user, request.META.get("REMOTE_ADDR"), "portal"))


@receiver(user_logged_out)
def _log_logout(sender, request, user, **kwargs):
    if user is not None:
        audit.record(AuditEntry.Action.LOGOUT, user, actor=audit.Actor(user, request.META.get("REMOTE_ADDR"), "portal"))


@receiver(user_login_failed)
def _log_login_failed(sender, credentials, request=None, **kwargs):
    addr = request.META.get("REMOTE_ADDR") if request is not None else None
    audit.record(
        AuditEntry.Action.LOGIN_FAILED,
        message=f"failed login for {credentials.get('username', '')!r}",
        actor=audit.Actor(None, addr, "portal"),
    )


audited(get_user_model())
audited(Group)
audited(Token)
