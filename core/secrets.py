"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with a key kept outside the database.

The key comes from VAFLEET_SECRETS_KEY (or VAFLEET_SECRETS_KEY_FILE); the embedded
default generates one into var/secrets.key on first use. Several comma-separated keys
allow rotation: the first encrypts, all decrypt.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

PREFIX = "fernet:"
MASK = "••••••••"


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the configured key."""


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    raw = settings.VAFLEET_SECRETS_KEY
    if not raw:
        path = settings.VAFLEET_SECRETS_KEY_PATH
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        raw = path.read_text().strip()
    return MultiFernet([Fernet(key.strip().encode()) for key in raw.split(",") if key.strip()])


def encrypt(plaintext: str) -> str:
    return PREFIX + _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token.startswith(PREFIX):
        raise SecretUnreadable("stored secret has no known format")
    try:
        return _fernet().decrypt(token[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored secret cannot be decrypted: the secrets key (VAFLEET_SECRETS_KEY) changed; "
            "restore the old key or enter the password again"
        ) from None


class Secret(str):
    """A decrypted secret whose repr and str-in-format never reveal the value."""

    def __repr__(self) -> str:
        return "Secret('********')"


class EncryptedTextField(models.TextField):
    """Stores ciphertext; gives back plaintext in Python. Never list it in serializers or admin."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return Secret(decrypt(value))

    def get_prep_value(self, value):
        if value in (None, ""):
            return value
        return encrypt(str(value))

    def to_python(self, value):
        return value
