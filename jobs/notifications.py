"""E-mails about backup runs: one when a run ends, and a daily summary.

When a run ends, its job's extra addresses (`notify_emails`) are told as the job's `notify_on` says:
`failure` for failed and partly failed runs, `always` for every end, cancelled runs included. Every
active user with a role who chose `on_failure` is told of failed and partly failed runs of any job.
A cancelled run is not a failure (someone chose to stop it): only `always` jobs report it. Each
address gets its own e-mail once; `JobRun.notified` is claimed with a guarded update first, so a
second call never sends again. When the mail server cannot be reached, the run is marked
(`config["mail_pending"]`) and the sweeper's rounds send the e-mail again for up to a day; a refusal
(address, sender, login) is not retried: it is logged with its sentence.
"""

from __future__ import annotations

import logging
import re
import smtplib
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db.models import Count, Q, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from core.errors import ActionableError
from core.rbac import GROUP_ROLES
from core.text import duration_text
from jobs.models import BackupJob, JobRun, NotificationSettings, Repository, Task

log = logging.getLogger(__name__)

FAILING = (JobRun.State.FAILED, JobRun.State.PARTIAL)
ENDED = (JobRun.State.SUCCEEDED, *FAILING, JobRun.State.CANCELLED)
SUMMARY_WINDOW = timedelta(hours=24)
SUMMARY_GAP = timedelta(hours=20)  # a summary sent less than this long ago is not sent again
SEPARATORS = re.compile(r"[,;\s]+")
MAIL_PENDING = "mail_pending"  # in JobRun.config: the run's e-mail waits for the mail server to come back
RETRY_WINDOW = timedelta(hours=24)


class MailError(ActionableError):
    code = "mail_failed"

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient  # the server could not be reached: the same e-mail may go through later


def is_transient(exc: Exception) -> bool:
    """Could not reach or lost the server (worth trying again), as opposed to a refusal (it would refuse again)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


# --- Addresses and recipients -------------------------------------------------------------------------------


def split_addresses(text: str | None) -> list[str]:
    return [a for a in SEPARATORS.split(text or "") if a]


def address_problem(text: str | None) -> str:
    """A sentence naming the first address that is not one ('' when every address is fine)."""
    for address in split_addresses(text):
        try:
            validate_email(address)
        except ValidationError:
            return (f"“{address}” is not an e-mail address: give addresses such as ops@example.com, separated by "
                    "commas.")
    return ""


def settings_of(user) -> NotificationSettings:
    """The user's settings; unsaved defaults when the user never changed them."""
    return NotificationSettings.objects.filter(user=user).select_related("user").first() or NotificationSettings(
        user=user)


def _with_role():
    """Settings of active users who hold a role (superusers are administrators)."""
    from django.contrib.auth import get_user_model

    in_role_groups = get_user_model().objects.filter(groups__name__in=list(GROUP_ROLES)).values("pk")
    return (NotificationSettings.objects.select_related("user")
            .filter(Q(user__is_superuser=True) | Q(user__in=in_role_groups), user__is_active=True)
            .order_by("user__username"))


def _unique(addresses) -> list[str]:
    seen: dict[str, str] = {}
    for address in addresses:
        address = address.strip()
        if address and address.lower() not in seen:
            seen[address.lower()] = address
    return list(seen.values())


def recipients(run: JobRun) -> list[str]:
    """Who is told of this run's end: the job's addresses per its notify_on, and users who opted in."""
    job: BackupJob | None = run.job
    found: list[str] = []
    if job is not None and (job.notify_on == BackupJob.Notify.ALWAYS or
                            (job.notify_on == BackupJob.Notify.FAILURE and run.state in FAILING)):
        found += split_addresses(job.notify_emails)
    if run.state in FAILING:
        found += [s.address for s in _with_role().filter(on_failure=True)]
    return _unique(found)


# --- Sending ----------------------------------------------------------------------------------------------


def _server() -> str:
    return f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"


def failure_sentence(exc: Exception) -> str:
    """What went wrong while sending, in words an operator can act on."""
    if settings.EMAIL_BACKEND.endswith("filebased.EmailBackend"):
        return (f"Cannot write the e-mail into {settings.EMAIL_FILE_PATH} ({exc}): check that the folder is writable, "
                "or set VAFLEET_SMTP_HOST to send through a mail server.")
    server = _server()
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"The mail server {server} refused the login of {settings.EMAIL_HOST_USER or 'no user'}: check "
                "VAFLEET_SMTP_USER and VAFLEET_SMTP_PASSWORD.")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(exc.recipients)
        return (f"The mail server {server} refused the address {refused}: check the address, or ask the mail "
                "server's administrator whether it accepts mail for it.")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return (f"The mail server {server} refused the sender {exc.sender}: set VAFLEET_MAIL_FROM to an address it "
                "accepts.")
    if isinstance(exc, smtplib.SMTPResponseException):
        return (f"The mail server {server} refused the e-mail ({exc.smtp_code} "
                f"{exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error})"
                ": check the mail server's log and the VAFLEET_SMTP_* settings.")
    if isinstance(exc, smtplib.SMTPException):
        return (f"The mail server {server} ended the conversation ({exc}): check VAFLEET_SMTP_TLS / "
                "VAFLEET_SMTP_SSL match what the server expects.")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return (f"Cannot reach the mail server {server} ({reason}): check VAFLEET_SMTP_HOST and VAFLEET_SMTP_PORT, "
                "and that the mail server is running.")
    return f"Sending the e-mail failed ({type(exc).__name__}: {exc}); see the server log."


def _message(subject: str, template: str, context: dict, to: str) -> EmailMultiAlternatives:
    context = {**context, "portal_url": settings.VAFLEET_PORTAL_URL}
    mail = EmailMultiAlternatives(f"[VA Fleet] {subject}", render_to_string(f"emails/{template}.txt", context),
                                  to=[to])
    mail.attach_alternative(render_to_string(f"emails/{template}.html", context), "text/html")
    return mail


def _send(messages: list[EmailMultiAlternatives]) -> None:
    """Send them over one connection; raises MailError with a sentence."""
    try:
        with get_connection() as connection:
            connection.send_messages(messages)
    except Exception as exc:
        raise MailError(failure_sentence(exc), transient=is_transient(exc)) from exc


def send_test_mail(address: str) -> str:
    """Send a test e-mail to `address`; returns where it went, raises MailError with a sentence."""
    if not address:
        raise MailError("There is no address to send to: enter one, or give your account an e-mail address.")
    _send([_message("Test e-mail", "test", {"address": address}, address)])
    if settings.EMAIL_BACKEND.endswith("filebased.EmailBackend"):
        return (f"No mail server is configured (VAFLEET_SMTP_HOST): the test e-mail to {address} was written into "
                f"{settings.EMAIL_FILE_PATH}.")
    return f"A test e-mail was sent to {address} through {_server()}."


# --- A run's end ------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    n = n or 0
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return duration_text((end - start).total_seconds())


def _vms(n: int) -> str:
    return f"{n} VM" if n == 1 else f"{n} VMs"


def run_subject(run: JobRun, counts: dict[str, int]) -> str:
    total, ok, failed = sum(counts.values()), counts.get(Task.State.SUCCEEDED, 0), counts.get(Task.State.FAILED, 0)
    tail = {
        JobRun.State.SUCCEEDED: f"succeeded: {_vms(ok)} backed up",
        JobRun.State.PARTIAL: f"partly failed: {failed} of {_vms(total)} failed",
        JobRun.State.FAILED: f"failed: {failed} of {_vms(total)} failed",
        JobRun.State.CANCELLED: f"was cancelled: {ok} of {_vms(total)} backed up",
    }[run.state]
    return f"{run.job_name} run #{run.pk} {tail}"


def run_context(run: JobRun) -> dict:
    tasks = list(run.tasks.select_related("restore_point").order_by("vm_name", "pk"))
    counts: dict[str, int] = defaultdict(int)
    for task in tasks:
        counts[task.state] += 1
    points = [t.restore_point for t in tasks if t.state == Task.State.SUCCEEDED and t.restore_point]
    return {
        "run": run,
        "subject": run_subject(run, counts),
        "state": run.get_state_display().lower(),
        "total": len(tasks),
        "succeeded": counts[Task.State.SUCCEEDED],
        "failed": counts[Task.State.FAILED],
        "cancelled": counts[Task.State.CANCELLED],
        "failed_tasks": [t for t in tasks if t.state == Task.State.FAILED],
        "protected": _size(sum(p.logical_bytes for p in points)),
        "stored": _size(sum(p.stored_bytes for p in points)),
        "duration": _duration(run.started, run.finished),
        "link": settings.VAFLEET_PORTAL_URL + reverse("jobs:run_detail", args=[run.pk]),
    }


def run_finished(run: JobRun) -> int:
    """E-mail the run's end to its recipients, once. Returns how many were sent; never raises (logs instead)."""
    try:
        return _run_finished(run)
    except MailError as exc:
        log.error("The e-mail about %s was not sent: %s", run, exc)
    except Exception:
        log.exception("The e-mail about %s was not sent", run)
    return 0


def _run_finished(run: JobRun) -> int:
    run = JobRun.objects.select_related("job").get(pk=run.pk)
    if run.state not in ENDED or run.notified is not None:
        return 0
    to = recipients(run)
    if not to:
        return 0
    sent_at = timezone.now()
    if not JobRun.objects.filter(pk=run.pk, notified=None).update(notified=sent_at):
        return 0  # another call sent it
    context = run_context(run)
    try:
        _send([_message(context["subject"], "run_finished", context, address) for address in to])
    except MailError as exc:
        config = {**run.config, MAIL_PENDING: True} if exc.transient else run.config
        JobRun.objects.filter(pk=run.pk, notified=sent_at).update(notified=None, config=config)  # nothing went out
        if exc.transient:
            log.warning("The e-mail about %s goes out again with the sweeper's next round.", run)
        raise
    log.info("E-mailed the end of %s to %s.", run, ", ".join(to))
    return len(to)


def retry_unsent(now: datetime | None = None) -> int:
    """Run e-mails that failed because the mail server was away: sent again while the run is under a day old
    (the sweeper calls this every round), then given up with a log line. Returns how many e-mails went out."""
    now = now or timezone.now()
    sent = 0
    for run in JobRun.objects.filter(**{f"config__{MAIL_PENDING}": True}, notified=None):
        JobRun.objects.filter(pk=run.pk).update(config={k: v for k, v in run.config.items() if k != MAIL_PENDING})
        if run.finished is None or now - run.finished > RETRY_WINDOW:
            log.error("The e-mail about %s was not sent: the mail server could not be reached for a day.", run)
            continue
        sent += run_finished(run)  # marks it pending again if the server is still away
    return sent


# --- The daily summary ------------------------------------------------------------------------------------


def summary_context(now: datetime) -> dict:
    since = now - SUMMARY_WINDOW
    runs = JobRun.objects.filter(state__in=ENDED, finished__gt=since, finished__lte=now)
    per_job = (runs.values("job_name").order_by("job_name")
               .annotate(succeeded=Count("pk", filter=Q(state=JobRun.State.SUCCEEDED)),
                         partial=Count("pk", filter=Q(state=JobRun.State.PARTIAL)),
                         failed=Count("pk", filter=Q(state=JobRun.State.FAILED)),
                         cancelled=Count("pk", filter=Q(state=JobRun.State.CANCELLED))))
    tasks = Task.objects.filter(run__in=runs)
    failed_tasks = tasks.filter(state=Task.State.FAILED).select_related("run").order_by("run__job_name", "vm_name")
    made = tasks.filter(state=Task.State.SUCCEEDED, restore_point__isnull=False).aggregate(
        logical=Sum("restore_point__logical_bytes"), stored=Sum("restore_point__stored_bytes"))
    repositories = Repository.objects.defer("password", "passphrase").annotate(
        points=Count("restore_points"), stored_bytes=Sum("restore_points__stored_bytes")).order_by("name")
    jobs = list(per_job)
    return {
        "since": since,
        "now": now,
        "jobs": jobs,
        "totals": {key: sum(job[key] for job in jobs) for key in ("succeeded", "partial", "failed", "cancelled")},
        "failed_tasks": list(failed_tasks),
        "protected": _size(made["logical"]),
        "stored": _size(made["stored"]),
        "repositories": [{"name": r.name, "points": r.points, "stored": _size(r.stored_bytes),
                          "free": _size(r.free_bytes) if r.free_bytes is not None else "unknown"}
                         for r in repositories],
        "link": settings.VAFLEET_PORTAL_URL + reverse("jobs:job_list"),
    }


def summary_subject(context: dict) -> str:
    totals = context["totals"]
    runs = sum(totals.values())
    if not runs:
        return "Daily summary: no run in the last 24 hours"
    problems = totals["failed"] + totals["partial"]
    return (f"Daily summary: {runs} run{'s' if runs != 1 else ''}, "
            + (f"{problems} failed or partly failed" if problems else "all succeeded"))


def daily_summary(now: datetime | None = None, *, force: bool = False) -> int:
    """One e-mail per user who asked for the summary and has an address, unless one went out in the last
    20 hours (`force` sends anyway). Returns how many were sent; a failure is logged, the others still go."""
    now = now or timezone.now()
    due = _with_role().filter(daily_summary=True)
    if not force:
        due = due.filter(Q(last_summary=None) | Q(last_summary__lte=now - SUMMARY_GAP))
    context, sent = None, 0
    for choice in due:
        if not choice.address:
            continue
        claim = NotificationSettings.objects.filter(pk=choice.pk)
        if not force:
            claim = claim.filter(Q(last_summary=None) | Q(last_summary__lte=now - SUMMARY_GAP))
        if not claim.update(last_summary=now):
            continue  # another worker sent it meanwhile
        context = context or summary_context(now)
        try:
            _send([_message(summary_subject(context), "daily_summary", {**context, "user": choice.user},
                            choice.address)])
        except MailError as exc:
            NotificationSettings.objects.filter(pk=choice.pk, last_summary=now).update(
                last_summary=choice.last_summary)
            log.error("The daily summary for %s was not sent: %s", choice.user, exc)
            continue
        sent += 1
    return sent
