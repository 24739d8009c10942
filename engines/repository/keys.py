"""Keys: the passphrase-derived wrapping key, the master keys, and sealing/opening blobs."""

from __future__ import annotations

import base64
import os

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from engines.errors import EngineError
from engines.repository import format as fmt


class WrongPassphrase(EngineError):
    code = "wrong_passphrase"


class IntegrityError(EngineError):
    code = "integrity_error"


def derive_wrapping_key(passphrase: str, kdf: fmt.KdfParams) -> bytes:
    if kdf.algorithm != "scrypt":
        raise EngineError(f"The repository uses key derivation {kdf.algorithm!r}, which this engine does not know; "
                          "upgrade the engine.", code="unsupported_format")
    salt = base64.b64decode(kdf.salt)
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode())


def wrap_master_key(passphrase: str, config: fmt.RepositoryConfig, master: bytes) -> None:
    """Fill `config` with fresh KDF salt and the master key sealed under the passphrase."""
    config.kdf.salt = base64.b64encode(os.urandom(16)).decode()
    nonce = os.urandom(fmt.NONCE_SIZE)
    wrapping = derive_wrapping_key(passphrase, config.kdf)
    sealed = AESGCM(wrapping).encrypt(nonce, master, fmt.KEYS_AAD_PREFIX + config.id.encode())
    config.keys_nonce = base64.b64encode(nonce).decode()
    config.wrapped_keys = base64.b64encode(sealed).decode()


def unwrap_master_key(passphrase: str, config: fmt.RepositoryConfig) -> bytes:
    wrapping = derive_wrapping_key(passphrase, config.kdf)
    try:
        return AESGCM(wrapping).decrypt(
            base64.b64decode(config.keys_nonce), base64.b64decode(config.wrapped_keys),
            fmt.KEYS_AAD_PREFIX + config.id.encode(),
        )
    except InvalidTag:
        raise WrongPassphrase(
            "The passphrase does not open this repository: check the repository passphrase in its settings."
        ) from None


class Keys:
    """The two master keys: AES-256-GCM for blobs, keyed BLAKE3 for chunk ids."""

    def __init__(self, master: bytes):
        if len(master) != fmt.MASTER_KEY_SIZE:
            raise IntegrityError("The repository master key has the wrong length; the config file is damaged.")
        self.aead = AESGCM(master[:32])
        self.id_key = master[32:]

    def chunk_id(self, data: bytes | bytearray | memoryview) -> bytes:
        return blake3.blake3(data, key=self.id_key).digest()

    def seal_into(self, out: bytearray, payload: bytes | bytearray | memoryview, flags: int,
                  context: bytes) -> memoryview:
        """Write header + ciphertext into the reusable `out`; returns the filled view."""
        nonce = os.urandom(fmt.NONCE_SIZE)
        size = fmt.BLOB_HEADER.size + len(payload) + fmt.TAG_SIZE
        view = memoryview(out)[:size]
        fmt.BLOB_HEADER.pack_into(out, 0, flags, nonce)
        self.aead.encrypt_into(nonce, payload, fmt.blob_aad(context, flags), view[fmt.BLOB_HEADER.size :])
        return view

    def seal(self, payload: bytes, flags: int, context: bytes) -> bytes:
        out = bytearray(fmt.BLOB_HEADER.size + len(payload) + fmt.TAG_SIZE)
        return bytes(self.seal_into(out, payload, flags, context))

    def open_into(self, blob: bytes, context: bytes, out: bytearray) -> tuple[int, memoryview]:
        """Authenticate and decrypt `blob` into `out`; returns (flags, plaintext view)."""
        if len(blob) < fmt.BLOB_HEADER.size + fmt.TAG_SIZE:
            raise IntegrityError("truncated")
        flags, nonce = fmt.BLOB_HEADER.unpack_from(blob, 0)
        size = len(blob) - fmt.BLOB_HEADER.size - fmt.TAG_SIZE
        if size > len(out):
            raise IntegrityError("longer than a chunk")
        view = memoryview(out)[:size]
        try:
            self.aead.decrypt_into(nonce, memoryview(blob)[fmt.BLOB_HEADER.size :], fmt.blob_aad(context, flags), view)
        except InvalidTag:
            raise IntegrityError("authentication failed") from None
        return flags, view

    def open(self, blob: bytes, context: bytes) -> tuple[int, bytes]:
        out = bytearray(max(0, len(blob) - fmt.BLOB_HEADER.size - fmt.TAG_SIZE))
        flags, view = self.open_into(blob, context, out)
        return flags, bytes(view)
