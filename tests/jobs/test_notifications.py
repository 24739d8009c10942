"""E-mail notifications against a real SMTP server (aiosmtpd on 127.0.0.1): a run's end to its job's
addresses and to the users who opted in, once; the daily summary; the test e-mail's sentences; and the
embedded default, which writes each e-mail as a file into the var directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings as django_settings
from django.test import override_settings
from django.utils import timezone

from appliances.models import Appliance
from core.models import AuditEntry
from inventory.models import VirtualMachine
from jobs import notifications, services
from jobs.models import BackupJob, JobRun, NotificationSettings, Repository, Task
from jobs.runs import execute_run
from tests.conftest import PASSWORD
from tests.jobs.conftest import PASSPHRASE, job_for

REFUSED_PREFIX = "nobody@"


class Inbox:
    """An aiosmtpd handler that keeps every message; it refuses recipients starting with nobody@."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith(REFUSED_PREFIX):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list:
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]

    def to(self) -> list[str]:
        return sorted(address for e in self.envelopes for address in e.rcpt_tos)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    """A real SMTP server on a free local port; Django's SMTP backend points at it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.controller = controller
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend", EMAIL_HOST="127.0.0.1",
                           EMAIL_PORT=controller.port, EMAIL_HOST_USER="", EMAIL_HOST_PASSWORD="",
                           EMAIL_USE_TLS=False, EMAIL_USE_SSL=False, EMAIL_TIMEOUT=5,
                           VAFLEET_PORTAL_URL="https://vafleet.example.com"):
        yield inbox
    if controller.loop.is_running():
        controller.stop()


def opt_in(user, email: str, *, on_failure: bool = False, daily_summary: bool = False) -> NotificationSettings:
    return NotificationSettings.objects.create(user=user, email=email, on_failure=on_failure,
                                               daily_summary=daily_summary)


def text_and_html(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def two_vms_on_two_hosts(lab) -> list[VirtualMachine]:
    vms = list(VirtualMachine.objects.filter(connection=lab).order_by("name"))
    first = vms[0]
    second = next(vm for vm in vms if vm.host_id != first.host_id)
    return [first, second]


def unserve(vm: VirtualMachine) -> None:
    """No appliance serves the VM's host any more: its backup fails at once with a sentence."""
    Appliance.objects.get(name="local-appliance").served_hosts.remove(vm.host)


def run(job: BackupJob) -> JobRun:
    return execute_run(services.start_run(job, queue=False).pk)


# --- A run's end ------------------------------------------------------------------------------------------


def test_a_partly_failed_run_mails_the_job_and_the_users_who_opted_in_once(lab, repository, smtp, make_user):
    failing, working = two_vms_on_two_hosts(lab)
    unserve(failing)
    job = job_for(repository, [failing, working], name="Lab demo", notify_emails="ops@example.com")
    opt_in(make_user("operator", "olga"), "olga@example.com", on_failure=True)
    opt_in(make_user("viewer", "victor"), "victor@example.com", on_failure=False)
    opt_in(make_user(None, "noah"), "noah@example.com", on_failure=True)  # no role: never told

    ended = run(job)

    assert ended.state == JobRun.State.PARTIAL, [(t.vm_name, t.message) for t in ended.tasks.all()]
    assert smtp.to() == ["olga@example.com", "ops@example.com"]
    subjects = {m["Subject"] for m in smtp.messages}
    assert subjects == {f"[VA Fleet] Lab demo run #{ended.pk} partly failed: 1 of 2 VMs failed"}
    text, html = text_and_html(smtp.messages[0])
    failed_task = ended.tasks.get(vm=failing)
    assert f"- {failing.name}: {failed_task.message}" in text
    assert "2 in all: 1 backed up, 1 failed" in text
    assert working.name not in text  # only failed VMs are listed
    link = f"https://vafleet.example.com/jobs/runs/{ended.pk}/"
    assert link in text and f'href="{link}"' in html
    assert failing.name in html
    ended.refresh_from_db()
    assert ended.notified is not None

    assert notifications.run_finished(ended) == 0  # a second call sends nothing
    assert len(smtp.envelopes) == 2


def test_never_sends_nothing_and_always_sends_on_success(lab, repository, smtp, make_user):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    opt_in(make_user("administrator", "ada"), "ada@example.com", on_failure=True)  # told of failures only

    quiet = job_for(repository, [vm], name="quiet", notify_on=BackupJob.Notify.ALWAYS, notify_emails="ops@example.com",
                    keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)
    ok = run(quiet)
    assert ok.state == JobRun.State.SUCCEEDED
    assert smtp.to() == ["ops@example.com"]
    assert smtp.messages[0]["Subject"] == f"[VA Fleet] quiet run #{ok.pk} succeeded: 1 VM backed up"
    text, html = text_and_html(smtp.messages[0])
    assert "Retention (last 1" in ok.message and f"Summary:   {ok.message}" in text  # the run's final message
    assert "Retention (last 1" in html

    BackupJob.objects.filter(pk=quiet.pk).update(notify_on=BackupJob.Notify.NEVER)
    unserve(vm)
    failed = run(quiet)
    assert failed.state == JobRun.State.FAILED
    assert smtp.to() == ["ada@example.com", "ops@example.com"]  # only the user who opted in, not the job's
    assert smtp.messages[-1]["Subject"] == f"[VA Fleet] quiet run #{failed.pk} failed: 1 of 1 VM failed"

    NotificationSettings.objects.update(on_failure=False)
    silent = run(quiet)
    assert silent.state == JobRun.State.FAILED
    assert len(smtp.envelopes) == 2
    silent.refresh_from_db()
    assert silent.notified is None


def test_a_refused_run_mail_is_logged_and_the_run_still_ends(lab, repository, smtp, caplog):
    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    unserve(vm)
    job = job_for(repository, [vm], notify_emails=f"{REFUSED_PREFIX}example.com")
    ended = run(job)
    assert ended.state == JobRun.State.FAILED
    assert smtp.envelopes == []
    ended.refresh_from_db()
    assert ended.notified is None  # nothing went out
    assert f"refused the address {REFUSED_PREFIX}example.com" in caplog.text


def test_who_hears_of_a_cancelled_run(db, make_user):
    repository = Repository.objects.create(name="r", kind="local", path="/srv/r", passphrase=PASSPHRASE)
    job = BackupJob.objects.create(name="j", repository=repository, notify_emails="a@example.com, b@example.com")
    opt_in(make_user("operator"), "op@example.com", on_failure=True)
    cancelled = JobRun.objects.create(job=job, job_name=job.name, state=JobRun.State.CANCELLED)
    assert notifications.recipients(cancelled) == []  # not a failure
    job.notify_on = BackupJob.Notify.ALWAYS
    job.save()
    cancelled.refresh_from_db()
    assert notifications.recipients(cancelled) == ["a@example.com", "b@example.com"]


# --- The daily summary ------------------------------------------------------------------------------------


def ended_run(job: BackupJob, state: str, finished, vms: dict[str, str]) -> JobRun:
    """A run as the runner leaves it: its tasks {vm name: state}, the failed ones with a message."""
    run = JobRun.objects.create(job=job, job_name=job.name, state=state)
    JobRun.objects.filter(pk=run.pk).update(started=finished - timedelta(minutes=3), finished=finished)
    for name, task_state in vms.items():
        failed = task_state == Task.State.FAILED
        Task.objects.create(run=run, vm_name=name, state=task_state, repository=job.repository,
                            message=f"The passphrase does not open this repository ({name})." if failed else "")
    return run


def test_the_daily_summary_counts_runs_names_failed_vms_and_is_sent_once_a_day(db, smtp, make_user):
    now = timezone.now()
    repository = Repository.objects.create(name="Local repository", kind="local", path="/srv/r",
                                           passphrase=PASSPHRASE)
    demo = BackupJob.objects.create(name="Lab demo", repository=repository)
    other = BackupJob.objects.create(name="Databases", repository=repository)
    ok = Task.State.SUCCEEDED
    ended_run(demo, JobRun.State.SUCCEEDED, now - timedelta(hours=20), {"web-1": ok})
    ended_run(demo, JobRun.State.SUCCEEDED, now - timedelta(hours=10), {"web-1": ok})
    ended_run(demo, JobRun.State.PARTIAL, now - timedelta(hours=2), {"web-1": ok, "web-2": Task.State.FAILED})
    ended_run(other, JobRun.State.FAILED, now - timedelta(hours=1), {"db-1": Task.State.FAILED})
    ended_run(other, JobRun.State.FAILED, now - timedelta(hours=30), {"old-vm": Task.State.FAILED})  # too old
    opt_in(make_user("viewer", "vera"), "vera@example.com", daily_summary=True)
    opt_in(make_user("operator", "otto"), "otto@example.com", daily_summary=False)

    assert notifications.daily_summary(now) == 1
    assert smtp.to() == ["vera@example.com"]
    message = smtp.messages[0]
    assert message["Subject"] == "[VA Fleet] Daily summary: 4 runs, 2 failed or partly failed"
    text, html = text_and_html(message)
    assert "3 succeeded" not in text and "2 succeeded, 1 partly failed, 1 failed" in text
    assert "- Lab demo: 2 / 1 / 0 / 0" in text
    assert "- Databases: 0 / 0 / 1 / 0" in text
    assert "- web-2 (Lab demo run #" in text and "- db-1 (Databases run #" in text
    assert "old-vm" not in text and "old-vm" not in html
    assert "- Local repository:" in text
    assert "web-2" in html and "db-1" in html

    assert notifications.daily_summary(now + timedelta(hours=1)) == 0  # sent less than 20 hours ago
    assert notifications.daily_summary(now + timedelta(hours=21)) == 1
    assert len(smtp.envelopes) == 2
    assert NotificationSettings.objects.get(email="vera@example.com").last_summary == now + timedelta(hours=21)


@pytest.mark.django_db
def test_the_daily_summary_is_scheduled_at_seven():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="daily summary")
    assert (schedule.func, schedule.schedule_type, schedule.cron) == ("jobs.tasks.daily_summary_task", "C",
                                                                      "0 7 * * *")
    assert timezone.localtime(schedule.next_run).hour == 7


# --- The user's page, the test e-mail and the API ---------------------------------------------------------


def test_the_notifications_page_saves_and_sends_a_test_mail(client, smtp, make_user):
    user = make_user("viewer", "vic")
    client.login(username="vic", password=PASSWORD)
    url = "/jobs/notifications/"
    page = client.get(url)
    assert page.status_code == 200 and b"Send a test e-mail" in page.content

    refused = client.post(url, {"email": "vic@@example.com", "on_failure": "on"})
    assert "Enter an e-mail address such as ops@example.com" in refused.content.decode()
    saved = client.post(url, {"email": "vic@example.com", "on_failure": "on", "action": "save"}, follow=True)
    assert "Your notification settings were saved." in saved.content.decode()
    assert NotificationSettings.objects.get(user=user).on_failure

    sent = client.post(url, {"email": "vic@example.com", "action": "test"})
    port = smtp.controller.port
    assert f"A test e-mail was sent to vic@example.com through 127.0.0.1:{port}." in sent.content.decode()
    assert smtp.to() == ["vic@example.com"] and smtp.messages[0]["Subject"] == "[VA Fleet] Test e-mail"

    refused_address = client.post(url, {"email": f"{REFUSED_PREFIX}example.com", "action": "test"})
    assert (f"The mail server 127.0.0.1:{port} refused the address {REFUSED_PREFIX}example.com"
            in refused_address.content.decode())

    smtp.controller.stop()
    unreachable = client.post(url, {"email": "vic@example.com", "action": "test"})
    assert (f"Cannot reach the mail server 127.0.0.1:{port} (Connection refused): check "
            "VAFLEET_SMTP_HOST and VAFLEET_SMTP_PORT, and that the mail server is running."
            in unreachable.content.decode())


def test_the_api_reads_and_changes_only_the_callers_settings(api_client_for):
    viewer = api_client_for("viewer")
    assert viewer.get("/api/jobs/notifications/me/").json() == {
        "email": "", "address": "", "on_failure": False, "daily_summary": False, "last_summary": None}
    refused = viewer.put("/api/jobs/notifications/me/", {"email": "", "daily_summary": True}, format="json")
    assert refused.status_code == 400
    assert refused.json()["email"] == ["Give the address to send to: the account has no e-mail address."]
    changed = viewer.put("/api/jobs/notifications/me/", {"email": "v@example.com", "daily_summary": True},
                         format="json")
    assert changed.status_code == 200 and changed.json()["address"] == "v@example.com"
    assert NotificationSettings.objects.get().user == viewer.user
    entry = AuditEntry.objects.get(object_type="jobs.NotificationSettings", action="create")
    assert entry.username == viewer.user.username and entry.changes["daily_summary"] == [None, True]
    viewer.patch("/api/jobs/notifications/me/", {"on_failure": True}, format="json")
    update = AuditEntry.objects.get(object_type="jobs.NotificationSettings", action="update")
    assert update.changes == {"on_failure": [False, True]}
    assert api_client_for(None).get("/api/jobs/notifications/me/").status_code == 403


def test_a_jobs_addresses_are_checked_with_a_sentence_naming_the_bad_one(api_client_for):
    admin = api_client_for("administrator")
    repository = Repository.objects.create(name="r", kind="local", path="/srv/r", passphrase=PASSPHRASE)
    job = BackupJob.objects.create(name="j", repository=repository)
    bad = admin.patch(f"/api/jobs/jobs/{job.pk}/", {"notify_emails": "ops@example.com, ops.example.com"},
                      format="json")
    assert bad.status_code == 400
    assert bad.json()["notify_emails"] == ["“ops.example.com” is not an e-mail address: give addresses such as "
                                           "ops@example.com, separated by commas."]
    good = admin.patch(f"/api/jobs/jobs/{job.pk}/", {"notify_on": "always", "notify_emails": "a@example.com;b@x.org"},
                       format="json")
    assert good.status_code == 200 and good.json()["notify_emails"] == "a@example.com, b@x.org"


# --- The embedded default ---------------------------------------------------------------------------------


def test_without_a_mail_server_each_mail_is_written_into_the_var_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAFLEET_SMTP_")}
    env.update(VAFLEET_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="vaproject.settings")
    script = ("import django; django.setup(); from jobs.notifications import send_test_mail; "
              "print(send_test_mail('ops@example.com'))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=django_settings.BASE_DIR)
    assert done.returncode == 0, done.stderr
    assert f"was written into {tmp_path / 'mail'}" in done.stdout
    files = list(Path(tmp_path, "mail").iterdir())
    assert len(files) == 1
    written = files[0].read_text()
    assert "To: ops@example.com" in written and "Subject: [VA Fleet] Test e-mail" in written


def test_the_job_form_names_the_bad_address_and_keeps_the_default(db):
    from jobs.forms import JobForm

    repository = Repository.objects.create(name="r", kind="local", path="/srv/r", passphrase=PASSPHRASE)
    data = {"name": "web", "repository": repository.pk, "rule_name": "web-*", "keep_last": 7, "keep_daily": 7,
            "keep_weekly": 4, "keep_monthly": 6, "mode": "auto", "compression_level": 3, "max_parallel": 4,
            "enabled": "on"}
    bad = JobForm({**data, "notify_emails": "ops@example.com, root@localhost@x"})
    assert not bad.is_valid()
    assert bad.errors["notify_emails"] == ["“root@localhost@x” is not an e-mail address: give addresses such as "
                                           "ops@example.com, separated by commas."]
    good = JobForm({**data, "notify_emails": "ops@example.com ,  dba@example.com"})
    assert good.is_valid(), good.errors
    job = good.save()
    assert (job.notify_on, job.notify_emails) == (BackupJob.Notify.FAILURE, "ops@example.com, dba@example.com")


def test_a_run_mail_the_server_could_not_take_is_sent_by_the_sweeper_once_it_is_back(lab, repository, smtp,
                                                                                       caplog):
    from jobs import sweeper

    vm = VirtualMachine.objects.filter(connection=lab).order_by("name").first()
    job = job_for(repository, [vm], notify_on=BackupJob.Notify.ALWAYS, notify_emails="ops@example.com")
    with override_settings(EMAIL_PORT=free_port()):  # nothing listens there: the server is away
        away = run(job)
    assert away.state == JobRun.State.SUCCEEDED and smtp.envelopes == []
    away.refresh_from_db()
    assert away.notified is None and away.config[notifications.MAIL_PENDING] is True
    assert "Cannot reach the mail server" in caplog.text

    report = sweeper.sweep()  # the server is back
    assert report.run_mails_sent == 1 and smtp.to() == ["ops@example.com"]
    assert smtp.messages[0]["Subject"] == f"[VA Fleet] {job.name} run #{away.pk} succeeded: 1 VM backed up"
    away.refresh_from_db()
    assert away.notified is not None and notifications.MAIL_PENDING not in away.config
    assert sweeper.sweep().run_mails_sent == 0  # once

    # A refusal is not retried; a day-old pending e-mail is given up with a log line.
    refused = run(job_for(repository, [vm], name="refused", notify_on=BackupJob.Notify.ALWAYS,
                          notify_emails=f"{REFUSED_PREFIX}example.com"))
    refused.refresh_from_db()
    assert refused.notified is None and notifications.MAIL_PENDING not in refused.config
    JobRun.objects.filter(pk=refused.pk).update(config={**refused.config, notifications.MAIL_PENDING: True},
                                                finished=timezone.now() - timedelta(hours=25))
    assert sweeper.sweep().run_mails_sent == 0
    assert notifications.MAIL_PENDING not in JobRun.objects.get(pk=refused.pk).config
    assert "could not be reached for a day" in caplog.text
