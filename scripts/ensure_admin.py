"""Create the `admin` user (group administrator) on first start and print its password once.

The password comes from VAFLEET_ADMIN_PASSWORD (or VAFLEET_ADMIN_PASSWORD_FILE); without it one
is generated. An existing admin user is left as it is: its password is never printed or reset.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "admin"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vaproject.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction

    from core.audit import Actor, acting_as
    from vaproject.envconf import env_str

    users = get_user_model().objects
    if users.filter(username=USERNAME).exists():
        print(f"Admin user '{USERNAME}' exists; its password is unchanged.")
        return 0
    given = env_str("VAFLEET_ADMIN_PASSWORD")
    password = given or secrets.token_urlsafe(12)
    with acting_as(Actor(via="cli")), transaction.atomic():
        user = users.create_user(USERNAME, password=password, is_staff=True, is_superuser=True)
        user.groups.add(Group.objects.get(name="administrator"))
    if given:
        print(f"Created admin user '{USERNAME}' with the password from VAFLEET_ADMIN_PASSWORD.")
    else:
        print(f"Created admin user '{USERNAME}' with password: {password}")
        print("This password is shown only now: note it, or change it after logging in.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
