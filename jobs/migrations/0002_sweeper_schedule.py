"""The django-q2 schedule of the job sweeper (every 5 minutes): releases what crashed tasks left behind."""

from django.db import migrations

SCHEDULE_NAME = "job sweeper"
FUNC = "jobs.tasks.sweep_task"
MINUTES = "I"  # django_q.models.Schedule.MINUTES (historical models carry no class constants)


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": FUNC, "schedule_type": MINUTES, "minutes": 5, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(create_schedule, remove_schedule),
    ]
