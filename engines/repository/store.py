"""The repository on a target: config and keys, the chunk store, and restore-point manifests."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import zstandard

from engines.errors import EngineError, TargetNotFound
from engines.repository import format as fmt
from engines.repository.index import ChunkIndex
from engines.repository.keys import IntegrityError, Keys, unwrap_master_key, wrap_master_key
from engines.targets.base import Target

log = logging.getLogger(__name__)


class RepositoryError(EngineError):
    code = "repository_error"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_restore_point_id() -> str:
    # Sorts by creation time (microseconds), unique without coordination.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(4)


class Repository:
    def __init__(self, target: Target, config: fmt.RepositoryConfig, keys: Keys):
        self.target = target
        self.config = config
        self.keys = keys
        self.chunk_size = config.chunk_size
        self.zero_chunk_id = keys.chunk_id(bytes(self.chunk_size))

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def create(cls, target: Target, passphrase: str, *, chunk_size: int = fmt.DEFAULT_CHUNK_SIZE,
               compression_level: int = 3, kdf_n: int = 1 << 15) -> Repository:
        if not passphrase:
            raise RepositoryError("A repository needs a passphrase: set one in the repository's settings.",
                                  code="bad_request")
        if not (fmt.MIN_CHUNK_SIZE <= chunk_size <= fmt.MAX_CHUNK_SIZE) or chunk_size & (chunk_size - 1):
            raise RepositoryError(f"Chunk size {chunk_size} is not allowed: use a power of two between "
                                  f"{fmt.MIN_CHUNK_SIZE} and {fmt.MAX_CHUNK_SIZE} bytes.", code="bad_request")
        if target.exists(fmt.CONFIG_PATH):
            raise RepositoryError("A repository already exists at this target: open it instead of initialising "
                                  "it again, or choose an empty folder.", code="repository_exists")
        config = fmt.RepositoryConfig(id=uuid.uuid4().hex, chunk_size=chunk_size,
                                      compression_level=compression_level, kdf=fmt.KdfParams(n=kdf_n),
                                      created=utc_now())
        master = secrets.token_bytes(fmt.MASTER_KEY_SIZE)
        wrap_master_key(passphrase, config, master)
        for folder in (fmt.SNAPSHOTS_DIR, fmt.LOCKS_DIR):
            target.makedirs(folder)
        for prefix in range(256):
            target.makedirs(f"{fmt.CHUNKS_DIR}/{prefix:02x}")
        # The config goes last: a half-initialised folder is not mistaken for a repository.
        if not target.put_new(fmt.CONFIG_PATH, config.to_json()):
            raise RepositoryError("Another process initialised this repository at the same time.",
                                  code="repository_exists")
        return cls(target, config, Keys(master))

    @classmethod
    def open(cls, target: Target, passphrase: str) -> Repository:
        try:
            raw = target.get(fmt.CONFIG_PATH)
        except TargetNotFound:
            raise RepositoryError("There is no VA Fleet repository at this target (no config file): check the "
                                  "path, or initialise the repository first.", code="repository_not_found") from None
        try:
            config = fmt.RepositoryConfig.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"The repository config file is unreadable ({exc}): restore it from a copy, "
                                  "or the folder is not a VA Fleet repository.", code="repository_corrupt") from None
        if config.version != fmt.FORMAT_VERSION:
            raise RepositoryError(
                f"This repository uses format version {config.version}, but this engine reads only version "
                f"{fmt.FORMAT_VERSION}: update the appliance's engine.", code="unsupported_format")
        return cls(target, config, Keys(unwrap_master_key(passphrase, config)))

    def change_passphrase(self, master: bytes, new_passphrase: str) -> None:
        """Rewrap the same master key under a new passphrase: chunk ids and blobs stay valid."""
        if not new_passphrase:
            raise RepositoryError("The new passphrase is empty: choose a passphrase.", code="bad_request")
        wrap_master_key(new_passphrase, self.config, master)
        self.target.put(fmt.CONFIG_PATH, self.config.to_json())

    # -- chunks ----------------------------------------------------------------------------
    def chunk_ids(self) -> ChunkIndex:
        """Every chunk on the target, by listing the 256 chunk folders once."""
        index = ChunkIndex()
        for folder in self.target.list(fmt.CHUNKS_DIR):
            if not folder.is_dir or len(folder.name) != 2:
                continue
            ids = [bytes.fromhex(e.name) for e in self.target.list(f"{fmt.CHUNKS_DIR}/{folder.name}")
                   if fmt.is_chunk_name(e.name) and e.size > 0 and e.name.startswith(folder.name)]
            if ids:
                index.add_folder(ids[0][0], ids)
        return index

    def chunk_sizes(self) -> dict[bytes, int]:
        sizes: dict[bytes, int] = {}
        for folder in self.target.list(fmt.CHUNKS_DIR):
            for entry in self.target.list(f"{fmt.CHUNKS_DIR}/{folder.name}") if folder.is_dir else ():
                if fmt.is_chunk_name(entry.name):
                    sizes[bytes.fromhex(entry.name)] = entry.size
        return sizes

    def put_chunk_blob(self, chunk_id: bytes, blob: memoryview | bytes) -> None:
        self.target.put(fmt.chunk_path(chunk_id), blob)

    def read_chunk(self, chunk_id: bytes, scratch: bytearray, dctx: zstandard.ZstdDecompressor) -> memoryview:
        """Fetch, authenticate, decompress and check one chunk; IntegrityError names what is wrong."""
        try:
            blob = self.target.get(fmt.chunk_path(chunk_id))
        except TargetNotFound:
            raise IntegrityError("missing from the target") from None
        flags, plain = self.keys.open_into(blob, chunk_id, scratch)
        if flags & fmt.FLAG_ZSTD:
            try:
                plain = memoryview(dctx.decompress(plain, max_output_size=self.chunk_size))
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"does not decompress ({exc})") from None
        if len(plain) > self.chunk_size or self.keys.chunk_id(plain) != chunk_id:
            raise IntegrityError("content does not match its id")
        return plain

    def blob_capacity(self) -> int:
        return fmt.BLOB_HEADER.size + self.chunk_size + fmt.TAG_SIZE

    # -- manifests -------------------------------------------------------------------------
    def save_manifest(self, manifest: fmt.Manifest) -> None:
        payload = zstandard.ZstdCompressor(level=3).compress(manifest.encode())
        context = fmt.manifest_context(manifest.vm, manifest.id)
        self.target.makedirs(f"{fmt.SNAPSHOTS_DIR}/{fmt.vm_folder(manifest.vm)}")
        self.target.sync()  # the chunks must be durable before a manifest names them
        self.target.put(fmt.manifest_path(manifest.vm, manifest.id), self.keys.seal(payload, fmt.FLAG_ZSTD, context))
        self.target.sync()

    def load_manifest(self, vm: str, restore_point_id: str) -> fmt.Manifest:
        try:
            blob = self.target.get(fmt.manifest_path(vm, restore_point_id))
        except TargetNotFound:
            raise RepositoryError(f"Restore point {restore_point_id} of VM {vm!r} does not exist in this repository: "
                                  "list the restore points and pick one.", code="restore_point_not_found") from None
        try:
            flags, payload = self.keys.open(blob, fmt.manifest_context(vm, restore_point_id))
            data = zstandard.ZstdDecompressor().decompress(payload) if flags & fmt.FLAG_ZSTD else payload
            return fmt.Manifest.decode(data)
        except (IntegrityError, zstandard.ZstdError, ValueError, KeyError) as exc:
            raise RepositoryError(f"Restore point {restore_point_id} of VM {vm!r} is damaged ({exc}): use another "
                                  "restore point and run verify.", code="manifest_corrupt") from None

    def restore_points(self, vm: str | None = None) -> Iterator[tuple[str, str]]:
        """(vm, restore point id) pairs found on the target, oldest first per VM."""
        folders = [fmt.vm_folder(vm)] if vm is not None else sorted(
            e.name for e in self.target.list(fmt.SNAPSHOTS_DIR) if e.is_dir)
        for folder in folders:
            names = sorted(e.name for e in self.target.list(f"{fmt.SNAPSHOTS_DIR}/{folder}")
                           if not e.is_dir and fmt.is_restore_point_id(e.name))
            for name in names:
                yield fmt.vm_from_folder(folder), name

    def find_restore_point(self, restore_point_id: str, vm: str | None = None) -> tuple[str, str]:
        for found_vm, rp in self.restore_points(vm):
            if rp == restore_point_id:
                return found_vm, rp
        raise RepositoryError(f"Restore point {restore_point_id} does not exist in this repository: list the "
                              "restore points and pick one.", code="restore_point_not_found")

    def delete_manifest(self, vm: str, restore_point_id: str) -> None:
        self.target.delete(fmt.manifest_path(vm, restore_point_id))
