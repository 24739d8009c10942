"""`manage.py jobs local|run|summary`: the embedded default's local repository and demo job, and runs from a shell.

`local` makes sure a repository in `<var>/repository` (on the built-in appliance, which is this
machine) and a "Lab demo" job for three lab VMs exist; the system's first start calls it. The
repository's passphrase is generated once and printed once: keep it to read the repository without
this server. `run JOB` runs a job to its end in this process. `summary` sends the daily summary e-mails now.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ActionableError
from inventory.models import Connection, VirtualMachine
from jobs import services
from jobs.models import BackupJob, Repository
from jobs.runs import execute_run

REPOSITORY = "Local repository"
JOB = "Lab demo"


class Command(BaseCommand):
    help = "Create the embedded default's local repository and demo job, or run a job here."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
        local = sub.add_parser("local", help="Create the local repository and the demo job (idempotent).")
        local.add_argument("--connection", default="Lab", help="Lab connection whose VMs the demo job protects.")
        run = sub.add_parser("run", help="Run a job to its end in this process.")
        run.add_argument("job", help="Job name.")
        summary = sub.add_parser("summary", help="Send the daily summary e-mail now to the users who asked for it.")
        summary.add_argument("--force", action="store_true",
                             help="Also to users who got one in the last 20 hours.")

    def handle(self, *args, **options) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except ActionableError as exc:
            raise CommandError(str(exc)) from exc

    def _local(self, options: dict) -> None:
        repository = Repository.objects.filter(name=REPOSITORY).first()
        if repository is None:
            passphrase = secrets.token_urlsafe(24)
            repository = Repository.objects.create(name=REPOSITORY, kind=Repository.Kind.LOCAL,
                                                   path=str(settings.VAR_DIR / "repository"), passphrase=passphrase)
            self.stdout.write(f"Created {REPOSITORY} in {repository.path}; its passphrase (shown once, keep it to "
                              f"read the repository without this server): {passphrase}")
        connection = Connection.objects.filter(name=options["connection"], kind="lab").first()
        if connection is not None and not BackupJob.objects.filter(name=JOB).exists():
            vms = list(VirtualMachine.objects.filter(connection=connection, vanished_at=None, is_template=False)
                       .order_by("name")[:3])
            job = BackupJob.objects.create(name=JOB, repository=repository, keep_last=3)
            job.vms.set(vms)
            self.stdout.write(f"Created job {JOB} for {', '.join(vm.name for vm in vms)} (run it from the portal).")

    def _summary(self, options: dict) -> None:
        from jobs.notifications import daily_summary

        sent = daily_summary(force=options["force"])
        self.stdout.write(f"Daily summary sent to {sent} user(s)." if sent else
                          "No daily summary was sent: none was due (--force sends anyway), no user who asked for "
                          "one has an address, or sending failed (see the log).")

    def _run(self, options: dict) -> None:
        job = BackupJob.objects.filter(name=options["job"]).first()
        if job is None:
            raise CommandError(f"No job named {options['job']!r}.")
        run = execute_run(services.start_run(job, queue=False).pk)
        for task in run.tasks.all():
            self.stdout.write(f"  {task.vm_name}: {task.get_state_display()} - {task.message}")
        self.stdout.write(f"{run}: {run.get_state_display()}. {run.message}")
        if run.state != run.State.SUCCEEDED:
            raise CommandError(f"{run} did not succeed.")
