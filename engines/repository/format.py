"""The repository's on-target format, defined once: layouts, names and (de)serialisation.

Nothing else in the engines packs repository bytes by hand; docs/repository-format.md
describes the same layouts for someone writing a compatible reader.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, unquote

from engines.repository.chunktable import ChunkTable

FORMAT_NAME = "vafleet-repository"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 16 << 20

CONFIG_PATH = "config"
CHUNKS_DIR = "chunks"
SNAPSHOTS_DIR = "snapshots"
LOCKS_DIR = "locks"
PRUNE_PENDING_PATH = "prune/pending"

ID_SIZE = 32  # keyed BLAKE3 digest
NONCE_SIZE = 12
TAG_SIZE = 16

# Sealed blob (chunk or manifest): flags u8 | nonce 12 | AES-256-GCM ciphertext + tag
BLOB_HEADER = struct.Struct("<B12s")
FLAG_ZSTD = 0x01

# Manifest plaintext after zstd decompression: magic | version u16 | json length u32 | json | disk tables
MANIFEST_MAGIC = b"VAFM"
MANIFEST_HEADER = struct.Struct("<4sHI")
# One stored (non-zero) chunk of a disk: chunk index u64 | chunk id 32
MANIFEST_ENTRY = struct.Struct("<Q32s")

KEYS_AAD_PREFIX = b"vafleet-keys:"
MANIFEST_AAD_PREFIX = b"vafleet-manifest:"
MASTER_KEY_SIZE = 64  # 32 bytes AES-256-GCM key | 32 bytes BLAKE3 id key

_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_RESTORE_POINT_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")


def chunk_path(chunk_id: bytes) -> str:
    hexid = chunk_id.hex()
    return f"{CHUNKS_DIR}/{hexid[:2]}/{hexid}"


def is_chunk_name(name: str) -> bool:
    return bool(_HEX_ID.match(name))


def is_restore_point_id(name: str) -> bool:
    return bool(_RESTORE_POINT_ID.match(name))


def vm_folder(vm: str) -> str:
    """VM names may hold spaces, slashes or any unicode: percent-encode them as one path component."""
    return quote(vm, safe="-_.@+~") or "%00"


def vm_from_folder(folder: str) -> str:
    return "" if folder == "%00" else unquote(folder)


def manifest_path(vm: str, restore_point_id: str) -> str:
    return f"{SNAPSHOTS_DIR}/{vm_folder(vm)}/{restore_point_id}"


def manifest_context(vm: str, restore_point_id: str) -> bytes:
    # Binds a manifest to its place: a manifest copied under another VM or id fails to open.
    return MANIFEST_AAD_PREFIX + vm.encode() + b"\0" + restore_point_id.encode()


def blob_aad(context: bytes, flags: int) -> bytes:
    """Associated data of a sealed blob: its context (the chunk id, or the manifest's place) and flags."""
    return context + bytes((flags,))


@dataclass
class KdfParams:
    algorithm: str = "scrypt"
    n: int = 1 << 15
    r: int = 8
    p: int = 1
    salt: str = ""  # base64


@dataclass
class RepositoryConfig:
    """The plain JSON `config` file: everything needed to open the repository with a passphrase."""

    id: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    compression_level: int = 3
    kdf: KdfParams = field(default_factory=KdfParams)
    wrapped_keys: str = ""  # base64 of AES-256-GCM ciphertext + tag of the 64-byte master key
    keys_nonce: str = ""  # base64
    created: str = ""
    version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT_NAME,
            "version": self.version,
            "id": self.id,
            "chunk_size": self.chunk_size,
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "encryption": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
            "kdf": asdict(self.kdf),
            "keys": {"nonce": self.keys_nonce, "wrapped": self.wrapped_keys},
            "created": self.created,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> RepositoryConfig:
        doc = json.loads(data)
        if doc.get("format") != FORMAT_NAME:
            raise ValueError("not a VA Fleet repository config")
        return cls(
            id=doc["id"],
            chunk_size=int(doc["chunk_size"]),
            compression_level=int(doc["compression"]["level"]),
            kdf=KdfParams(**doc["kdf"]),
            wrapped_keys=doc["keys"]["wrapped"],
            keys_nonce=doc["keys"]["nonce"],
            created=doc.get("created", ""),
            version=int(doc["version"]),
        )


@dataclass
class DiskRecord:
    """One disk of a restore point; `chunks` maps chunk index to id, absent indexes are zero."""

    name: str
    size: int
    chunks: ChunkTable = field(default_factory=ChunkTable, repr=False)
    change_id: str = ""
    digest: str = ""  # hex BLAKE3 over size and every chunk position's id (see docs)
    stored_bytes: int = 0  # bytes of new chunks this backup uploaded for the disk

    def __post_init__(self) -> None:
        if not isinstance(self.chunks, ChunkTable):
            self.chunks = ChunkTable(self.chunks)


@dataclass
class Manifest:
    """A restore point: the VM, its configuration and its disks."""

    id: str
    vm: str
    chunk_size: int
    started: str
    finished: str
    vm_config: dict = field(default_factory=dict)
    disks: list[DiskRecord] = field(default_factory=list)
    parent: str = ""
    kind: str = "full"  # full | incremental-cbt | incremental
    stats: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        meta = {
            "id": self.id,
            "vm": self.vm,
            "vm_config": self.vm_config,
            "chunk_size": self.chunk_size,
            "started": self.started,
            "finished": self.finished,
            "parent": self.parent,
            "kind": self.kind,
            "stats": self.stats,
            "disks": [
                {
                    "name": d.name,
                    "size": d.size,
                    "change_id": d.change_id,
                    "digest": d.digest,
                    "stored_bytes": d.stored_bytes,
                    "entries": len(d.chunks),
                }
                for d in self.disks
            ],
        }
        meta_bytes = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        parts = [MANIFEST_HEADER.pack(MANIFEST_MAGIC, FORMAT_VERSION, len(meta_bytes)), meta_bytes]
        for disk in self.disks:
            table = bytearray(MANIFEST_ENTRY.size * len(disk.chunks))
            for i, (index, cid) in enumerate(disk.chunks.items()):  # ascending index order
                MANIFEST_ENTRY.pack_into(table, i * MANIFEST_ENTRY.size, index, cid)
            parts.append(table)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        magic, version, meta_len = MANIFEST_HEADER.unpack_from(data, 0)
        if magic != MANIFEST_MAGIC:
            raise ValueError("bad manifest magic")
        if version != FORMAT_VERSION:
            raise ValueError(f"manifest format version {version} is not supported")
        pos = MANIFEST_HEADER.size
        meta = json.loads(data[pos : pos + meta_len])
        pos += meta_len
        disks = []
        for d in meta["disks"]:
            count = d["entries"]
            end = pos + count * MANIFEST_ENTRY.size
            if end > len(data):
                raise ValueError("manifest chunk table is truncated")
            chunks = ChunkTable(MANIFEST_ENTRY.iter_unpack(memoryview(data)[pos:end]))
            pos = end
            disks.append(
                DiskRecord(d["name"], d["size"], chunks, d.get("change_id", ""), d.get("digest", ""),
                           d.get("stored_bytes", 0))
            )
        return cls(
            id=meta["id"], vm=meta["vm"], chunk_size=meta["chunk_size"], started=meta["started"],
            finished=meta["finished"], vm_config=meta.get("vm_config", {}), disks=disks,
            parent=meta.get("parent", ""), kind=meta.get("kind", "full"), stats=meta.get("stats", {}),
        )

    def summary(self) -> dict:
        """What the catalog records about a restore point (no chunk tables)."""
        return {
            "id": self.id,
            "vm": self.vm,
            "parent": self.parent,
            "kind": self.kind,
            "started": self.started,
            "finished": self.finished,
            "vm_config": self.vm_config,
            "disks": [
                {"name": d.name, "size": d.size, "change_id": d.change_id, "digest": d.digest,
                 "stored_chunks": len(d.chunks)}
                for d in self.disks
            ],
            "stats": self.stats,
        }


def disk_digest(size: int, chunk_size: int, chunks: Mapping[int, bytes], zero_id: bytes, tail_zero_id: bytes) -> str:
    """BLAKE3 over the disk size (u64 LE) then, for every chunk position in order, its id.

    Positions without an entry are zero and contribute the id of a zero chunk (of the tail's
    length for a short last chunk). Restore recomputes it from the written output.
    """
    import blake3

    count = -(-size // chunk_size)
    h = blake3.blake3(struct.pack("<Q", size))
    position = 0
    pairs = chunks.items() if isinstance(chunks, ChunkTable) else sorted(chunks.items())  # ascending indexes
    for index, cid in pairs:
        _feed_zero_run(h, zero_id, index - position)
        h.update(cid)
        position = index + 1
    if position < count:
        _feed_zero_run(h, zero_id, count - position - 1)
        h.update(tail_zero_id if size % chunk_size else zero_id)
    return h.hexdigest()


def _feed_zero_run(h, zero_id: bytes, run: int) -> None:
    block = zero_id * 4096
    while run >= 4096:
        h.update(block)
        run -= 4096
    if run:
        h.update(zero_id * run)
