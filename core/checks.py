"""System checks that report a bad configuration in words (`manage.py check`)."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def secrets_key(app_configs, **kwargs):
    from cryptography.fernet import Fernet

    raw = settings.VAFLEET_SECRETS_KEY
    if not raw:
        return []
    errors = []
    for key in raw.split(","):
        try:
            Fernet(key.strip().encode())
        except ValueError:
            errors.append(
                Error(
                    "VAFLEET_SECRETS_KEY is not a valid key.",
                    hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'",
                    id="vafleet.E001",
                )
            )
    return errors
