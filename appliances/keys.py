"""The fleet's keys, kept outside the database in `<var>/fleet/`: one SSH key pair, one signing key.

Both are Ed25519, generated once on first use (atomic create: concurrent first uses agree on one key).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliances import var_dir


def fleet_dir() -> Path:
    path = var_dir() / "fleet"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def fingerprint(public_key_line: str) -> str:
    """OpenSSH-style SHA256 fingerprint of an `ssh-ed25519 AAAA...` line."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _load_or_create(path: Path, encoding: serialization.PrivateFormat) -> Ed25519PrivateKey:
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, encoding,
                                                         serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key first: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), None) if encoding is serialization.PrivateFormat.PKCS8 \
        else serialization.load_ssh_private_key(path.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def signing_key() -> Ed25519PrivateKey:
    """The fleet key that signs engine bundles."""
    return _load_or_create(fleet_dir() / "bundle-signing-ed25519.pem", serialization.PrivateFormat.PKCS8)


def signing_public_pem() -> bytes:
    return signing_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    assert isinstance(key, Ed25519PublicKey)
    return key


def ssh_key_path() -> Path:
    """The fleet's SSH private key (OpenSSH format), created on first use."""
    path = fleet_dir() / "ssh-ed25519"
    _load_or_create(path, serialization.PrivateFormat.OpenSSH)
    return path


def ssh_public_line() -> str:
    key = _load_or_create(ssh_key_path(), serialization.PrivateFormat.OpenSSH)
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " vafleet-fleet"
