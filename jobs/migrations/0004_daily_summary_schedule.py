"""The django-q2 schedule of the daily summary e-mails (every day at 07:00, server time)."""

from datetime import datetime

from django.db import migrations
from django.utils import timezone

SCHEDULE_NAME = "daily summary"
FUNC = "jobs.tasks.daily_summary_task"
CRON = "C"  # django_q.models.Schedule.CRON (historical models carry no class constants)
EXPRESSION = "0 7 * * *"


def create_schedule(apps, schema_editor):
    from croniter import croniter

    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": FUNC, "schedule_type": CRON, "cron": EXPRESSION, "repeats": -1,
                  # The next 07:00, never "at once" when installed.
                  "next_run": croniter(EXPRESSION, timezone.localtime()).get_next(datetime)},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0003_notifications_and_throttle"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(create_schedule, remove_schedule),
    ]
