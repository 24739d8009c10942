"""Admin for support staff: repositories (password and passphrase write-only, the portal's form and rules),
backup jobs (the portal's rules; "Run now"), and what runs write (runs, tasks with their events, restore
points: read-only).

Changes to repositories and jobs go through model saves and so reach the audit log.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from appliances.actions import SENTENCE_ERRORS
from core import audit
from core.admin import ReadOnlyInline
from core.errors import ActionableError
from core.models import AuditEntry
from inventory.admin import ReadOnlyAdmin  # history: never deleted here either
from jobs import repositories, services
from jobs.forms import RepositoryForm, clean_rules, job_problems
from jobs.models import BackupJob, JobRun, NotificationSettings, Repository, RestorePoint, Task, TaskEvent
from jobs.notifications import address_problem


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    # The portal's form: the same rules; its password and passphrase fields are write-only.
    form = RepositoryForm
    exclude = ("password", "passphrase", "options")  # only the form's write-only and per-kind fields handle them
    list_display = ("name", "kind", "host", "path", "last_test_ok", "last_test", "free_bytes", "initialized_at")
    list_filter = ("kind", "last_test_ok")
    search_fields = ("name", "host", "path", "share", "username")
    readonly_fields = ("initialized_at", "last_test", "last_test_ok", "last_test_message", "free_bytes", "created",
                       "updated")
    fieldsets = (
        (None, {"fields": ("name", "kind", "host", "port", "share", "path", "username", "password")}),
        ("Target options", {"fields": ("host_key", "tls_verify", "ca_file", "export")}),
        ("Encryption", {"fields": ("passphrase", "passphrase_confirm", "chunk_size")}),
        ("Status", {"fields": readonly_fields}),
    )
    actions = ["test_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Lists never decrypt secrets: they render even if the secrets key is wrong.
        return super().get_queryset(request).defer("password", "passphrase")

    @admin.action(description="Test connection (from an appliance)")
    def test_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for repository in queryset:
            try:
                result = repositories.test_repository(repository)
            except SENTENCE_ERRORS as exc:
                self.message_user(request, f"{repository.name}: {repository.last_test_message or exc}",
                                  messages.ERROR)
                ok = False
            else:
                self.message_user(request, f"{repository.name}: {result.message}", messages.SUCCESS)
                ok = True
            audit.record(AuditEntry.Action.OPERATION, repository,
                         message=f"connection test: {'ok' if ok else 'failed'}")


class BackupJobAdminForm(forms.ModelForm):
    """The portal's rules for the schedule, retention and options (rules stay raw JSON here)."""

    class Meta:
        model = BackupJob
        fields = ["name", "repository", "vms", "rules", "schedule", "keep_last", "keep_daily", "keep_weekly",
                  "keep_monthly", "mode", "compression_level", "use_cbt", "verify", "max_parallel", "throttle_mbps",
                  "notify_on", "notify_emails", "enabled"]

    def clean(self) -> dict:
        data = super().clean()
        sentence = address_problem(data.get("notify_emails"))
        if sentence:
            self.add_error("notify_emails", sentence)
        rules, problems = clean_rules(data.get("rules"))
        data["rules"] = rules
        if problems:
            self.add_error("rules", " ".join(problems.values()))
        values = {name: data.get(name) for name in ("schedule", "keep_last", "max_parallel", "compression_level")}
        for name, sentence in job_problems(values).items():
            if name in self.fields and name not in self.errors:
                self.add_error(name, sentence)
        if data.get("schedule"):
            data["schedule"] = data["schedule"].strip()
        return data


@admin.register(BackupJob)
class BackupJobAdmin(admin.ModelAdmin):
    form = BackupJobAdminForm
    list_display = ("name", "repository", "schedule", "mode", "enabled", "updated")
    list_filter = ("enabled", "mode", "repository")
    list_select_related = ("repository",)
    search_fields = ("name",)
    filter_horizontal = ("vms",)
    readonly_fields = ("created", "updated")
    actions = ["run_now"]

    @admin.action(description="Run now")
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for job in queryset.select_related("repository"):
            try:
                run = services.start_run(job, request.user, "manual")
            except ActionableError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            audit.record(AuditEntry.Action.OPERATION, job, message=f"run #{run.pk} started")
            self.message_user(request, f"Run #{run.pk} of {job.name} queued.", messages.SUCCESS)


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "state", "trigger", "created", "started", "finished", "message")
    list_filter = ("state", "trigger")
    search_fields = ("job_name", "message")
    raw_id_fields = ("job", "created_by")


class TaskEventInline(ReadOnlyInline):
    model = TaskEvent
    fields = ("seq", "type", "data", "time")
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "kind", "state", "appliance_name", "mode", "phase", "bytes_done", "created", "finished")
    list_filter = ("kind", "state", "mode")
    list_select_related = ("run",)
    search_fields = ("vm_name", "appliance_name", "message", "error_code")
    raw_id_fields = ("run", "vm", "connection", "repository", "appliance", "restore_point", "created_by")
    inlines = [TaskEventInline]


@admin.register(RestorePoint)
class RestorePointAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "repository", "kind", "taken", "logical_bytes", "stored_bytes", "verified")
    list_filter = ("repository", "kind", "verified")
    list_select_related = ("repository",)
    search_fields = ("vm_name", "rp_id")
    raw_id_fields = ("vm",)


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    list_display = ("user", "email", "on_failure", "daily_summary", "last_summary")
    list_filter = ("on_failure", "daily_summary")
    list_select_related = ("user",)
    search_fields = ("user__username", "email", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("last_summary",)
