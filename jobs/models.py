"""Repositories, backup jobs, their runs and per-VM tasks, engine events, and the catalog of restore points.

A `JobRun` freezes the job's settings when it starts (editing a job never rewrites history) and fans
out into one `Task` per VM. Restores are tasks too (kind `restore`, no run), so backups and restores
share dispatch, engine events (`TaskEvent`, numbered per task) and live progress.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from appliances.models import Appliance
from core.secrets import EncryptedTextField
from core.signals import audited
from inventory.models import Connection, VirtualMachine

MIB = 1 << 20


@audited
class Repository(models.Model):
    class Kind(models.TextChoices):
        LOCAL = "local", "Local folder (on the appliance)"
        SFTP = "sftp", "SFTP"
        FTP = "ftp", "FTP"
        FTPS = "ftps", "FTPS (explicit TLS)"
        SMB = "smb", "CIFS / SMB"
        NFS = "nfs", "NFS"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    host = models.CharField(max_length=255, blank=True, help_text="Server address; empty for a local folder.")
    port = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the protocol's default port.")
    path = models.CharField(max_length=500, help_text="Folder of the repository (SMB: path inside the share).")
    share = models.CharField(max_length=200, blank=True, help_text="SMB share name.")
    username = models.CharField(max_length=150, blank=True)
    password = EncryptedTextField(blank=True)
    passphrase = EncryptedTextField(help_text="Encrypts the repository; without it nothing can be restored.")
    options = models.JSONField(default=dict, blank=True,
                               help_text="Target options: tls_verify, ca_file, host_key, export (NFS)...")
    chunk_size = models.PositiveIntegerField(default=MIB)
    initialized_at = models.DateTimeField(null=True, blank=True)
    last_test = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True)
    last_test_message = models.CharField(max_length=500, blank=True)
    free_bytes = models.BigIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name


@audited
class BackupJob(models.Model):
    class Mode(models.TextChoices):
        AUTO = "auto", "Automatic (hot-add, else network)"
        HOTADD = "hotadd", "Hot-add only"
        NETWORK = "network", "Network only"

    class Notify(models.TextChoices):
        NEVER = "never", "Never"
        FAILURE = "failure", "When a run fails or partly fails"
        ALWAYS = "always", "After every run"

    name = models.CharField(max_length=100, unique=True)
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="jobs")
    vms = models.ManyToManyField(VirtualMachine, blank=True, related_name="backup_jobs",
                                 help_text="VMs chosen one by one.")
    rules = models.JSONField(default=dict, blank=True,
                             help_text='Also every VM matching: {"hosts": [ids], "folders": ["path"], "name": "glob"}.')
    schedule = models.CharField(max_length=100, blank=True, help_text="Cron expression; empty: run by hand only.")
    keep_last = models.PositiveIntegerField(default=7)
    keep_daily = models.PositiveIntegerField(default=7)
    keep_weekly = models.PositiveIntegerField(default=4)
    keep_monthly = models.PositiveIntegerField(default=6)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.AUTO)
    compression_level = models.PositiveSmallIntegerField(default=3)
    use_cbt = models.BooleanField(default=True, help_text="Read only changed blocks when the hypervisor knows them.")
    verify = models.BooleanField(default=True, help_text="Authenticate every new restore point.")
    max_parallel = models.PositiveSmallIntegerField(default=4, help_text="VMs of this job backed up at once.")
    throttle_mbps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Read limit per VM in MB/s (spares the production storage); empty: none.")
    notify_on = models.CharField(max_length=10, choices=Notify.choices, default=Notify.FAILURE,
                                 help_text="When this job's recipients get an e-mail about a run.")
    notify_emails = models.CharField(max_length=500, blank=True,
                                     help_text="Extra addresses for this job's run e-mails, separated by commas.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JobRun(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partly failed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(BackupJob, null=True, on_delete=models.SET_NULL, related_name="runs")
    job_name = models.CharField(max_length=100)
    config = models.JSONField(default=dict, help_text="The job's settings when the run started.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    trigger = models.CharField(max_length=10, default="manual")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    message = models.CharField(max_length=500, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    notified = models.DateTimeField(null=True, blank=True, help_text="When the run's e-mail was sent.")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.job_name} run #{self.pk}"


class RestorePoint(models.Model):
    """One restore point in a repository (the catalog); the repository alone can rebuild these rows."""

    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="restore_points")
    rp_id = models.CharField(max_length=80, help_text="The engine's restore point id.")
    vm = models.ForeignKey(VirtualMachine, null=True, blank=True, on_delete=models.SET_NULL,
                           related_name="restore_points")
    vm_name = models.CharField(max_length=255, help_text="The VM's name in the repository.")
    kind = models.CharField(max_length=20, blank=True, help_text="full, incremental-cbt or incremental.")
    parent = models.CharField(max_length=80, blank=True)
    taken = models.DateTimeField(help_text="When the backup finished.")
    disks = models.JSONField(default=list, help_text="[{name, size, digest, change_id}]")
    vm_config = models.JSONField(default=dict, blank=True)
    logical_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    verified = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-taken"]
        constraints = [models.UniqueConstraint(fields=["repository", "rp_id"], name="restore_point_id")]

    def __str__(self) -> str:
        return f"{self.vm_name} @ {self.taken:%Y-%m-%d %H:%M}"


class Task(models.Model):
    """One VM's backup in a run, or one restore: dispatched to an appliance, which runs the engine."""

    class Kind(models.TextChoices):
        BACKUP = "backup", "Backup"
        RESTORE = "restore", "Restore"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Mode(models.TextChoices):
        HOTADD = "hotadd", "Hot-add"
        NETWORK = "network", "Network"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.BACKUP)
    run = models.ForeignKey(JobRun, null=True, blank=True, on_delete=models.CASCADE, related_name="tasks")
    vm = models.ForeignKey(VirtualMachine, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    vm_name = models.CharField(max_length=255)
    connection = models.ForeignKey(Connection, null=True, on_delete=models.SET_NULL, related_name="+")
    repository = models.ForeignKey(Repository, null=True, on_delete=models.SET_NULL, related_name="tasks")
    appliance = models.ForeignKey(Appliance, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    appliance_name = models.CharField(max_length=80, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, blank=True)
    mode_reason = models.CharField(max_length=300, blank=True)
    phase = models.CharField(max_length=60, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    rate = models.BigIntegerField(default=0, help_text="Bytes per second.")
    eta = models.FloatField(null=True, blank=True, help_text="Seconds left.")
    message = models.CharField(max_length=1000, blank=True)
    error_code = models.CharField(max_length=60, blank=True)
    restore_point = models.ForeignKey(RestorePoint, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="tasks", help_text="Made by a backup; read by a restore.")
    spec = models.JSONField(default=dict, blank=True, help_text="A restore's destination.")
    result = models.JSONField(default=dict, blank=True, help_text="The engine's result figures.")
    snapshot = models.CharField(max_length=80, blank=True, help_text="Snapshot moref while one is held.")
    attached = models.JSONField(default=list, blank=True, help_text="Device keys hot-added to the appliance.")
    cancel_requested = models.BooleanField(default=False)
    last_seq = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["appliance", "state"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.vm_name} #{self.pk}"

    @property
    def active(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)

    QUEUE_KEYS = ("q2_task", "q2_requeued")  # the queue's bookkeeping kept in `spec` (see jobs.sweeper)

    @property
    def destination(self) -> dict:
        """A restore's destination as it was asked for: `spec` without the queue's bookkeeping."""
        return {key: value for key, value in self.spec.items() if key not in self.QUEUE_KEYS}


class TaskEvent(models.Model):
    """An engine or orchestration event of a task, numbered from 1 in the order it happened."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=12)  # progress, log, result, error, phase
    data = models.JSONField(default=dict)
    time = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "seq"]
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="task_event_seq")]

    def __str__(self) -> str:
        return f"{self.task_id}#{self.seq} {self.type}"


@audited  # who chose to be told what is part of the record (the summary's `last_summary` is set by update)
class NotificationSettings(models.Model):
    """A user's e-mail choices: failures of every job, a daily summary, and where to send them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    email = models.EmailField(blank=True, help_text="Empty: the account's e-mail address.")
    on_failure = models.BooleanField(default=False, help_text="An e-mail when any job's run fails or partly fails.")
    daily_summary = models.BooleanField(default=False, help_text="One e-mail a day with the last 24 hours of runs.")
    last_summary = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"Notifications of {self.user}"

    @property
    def address(self) -> str:
        return self.email or self.user.email
