"""Realistic, deterministic disk content: holes, log-like text, structured records, random data.

Same seed, same bytes; different seeds never share a 4 KiB block, so dedup inside or across
lab disks finds nothing it should not. Random data comes from AES-CTR (fast, and the GIL is
released), text and records from a small cached corpus perturbed per block.
"""

from __future__ import annotations

import array
import hashlib
import os
import random
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REGION = 1 << 20
BLOCK = 4096
KINDS = (("text", 40), ("binary", 35), ("random", 25))
_SMALL = bytes(b & 0x3F for b in range(256))
_WORDS = (
    "the of and to in is for on that by with from at as be this are or was it an error warning info debug "
    "kernel disk backup volume snapshot host vm datastore network service started stopped connection timeout "
    "user admin session request response GET POST /api/v1/orders 200 404 500 ms bytes queue worker thread "
    "config value true false null id name path file size offset block chunk index table row column nginx "
    "postgres smtpd sshd cron systemd ldap kerberos replication commit checkpoint vacuum"
).split()


@lru_cache(maxsize=1)
def _corpus() -> bytes:
    rng = random.Random(7)
    lines, size = [], 0
    while size < 2 * REGION:
        day, hour, minute, second = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        stamp = f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        line = f"{stamp} {' '.join(rng.choices(_WORDS, k=rng.randint(6, 18)))} {rng.randint(0, 99999)}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


@lru_cache(maxsize=8)
def _ramp(n: int) -> bytes:
    return array.array("I", (i * 4096 & 0xFFFFFFFF for i in range(n))).tobytes()


@lru_cache(maxsize=8)
def _index(n: int) -> bytes:
    return array.array("H", (i & 0xFFFF for i in range(n))).tobytes()


class ContentSource:
    """Makes blocks of content for one disk (or one round of writes), deterministic from `seed`."""

    def __init__(self, seed: int | str):
        self.rng = random.Random(f"lab-content/{seed}")
        self.key = hashlib.sha256(f"lab-content/{seed}".encode()).digest()
        self.counter = 0

    def pick_kind(self) -> str:
        return self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]

    def make(self, kind: str, size: int) -> bytes:
        if kind == "random":
            return self._random(size)
        buf = self._text(size) if kind == "text" else self._binary(size)
        self._perturb(buf)
        return bytes(buf)

    def _random(self, size: int) -> bytes:
        self.counter += 1
        nonce = self.counter.to_bytes(8, "big") + bytes(8)
        return Cipher(algorithms.AES(self.key), modes.CTR(nonce)).encryptor().update(bytes(size))

    def _text(self, size: int) -> bytearray:
        corpus = _corpus()
        out = bytearray()
        while len(out) < size:
            start = self.rng.randrange(len(corpus) - REGION)
            out += corpus[start:start + min(REGION, size - len(out))]
        return out

    def _binary(self, size: int) -> bytearray:
        # 32-byte records: a 64-bit offset (a ramp under a random high word), a 16-bit index,
        # a small type, two bytes of noise, a 40-bit copy of the offset; the rest stays zero
        n = -(-size // 32)
        ramp, index = _ramp(n), _index(n)
        high = self.rng.randbytes(4)
        buf = bytearray(n * 32)
        for k in range(4):
            buf[k::32] = ramp[k::4]
            buf[4 + k::32] = high[k:k + 1] * n
            buf[24 + k::32] = ramp[k::4]
        buf[28::32] = high[0:1] * n
        buf[8::32], buf[9::32] = index[0::2], index[1::2]
        buf[10::32] = self.rng.randbytes(n).translate(_SMALL)
        noise = self.rng.randbytes(2 * n)
        buf[12::32], buf[13::32] = noise[0::2], noise[1::2]
        del buf[size:]
        return buf

    def _perturb(self, buf: bytearray) -> None:
        """A few random bytes in every block, so no two blocks anywhere are equal."""
        noise = self.rng.randbytes(8 * (len(buf) // BLOCK + 1))
        for i, pos in enumerate(range(self.rng.randrange(BLOCK - 8), len(buf) - 8, BLOCK)):
            buf[pos:pos + 8] = noise[8 * i:8 * i + 8]


def fill_disk(path: str | os.PathLike, capacity: int, seed: int | str, fill: float = 0.25) -> int:
    """Create a sparse image of `capacity` bytes with about `fill` of its regions written; returns bytes written."""
    source = ContentSource(seed)
    # at least 64 regions, so small disks get the same mix as large ones
    region = max(64 << 10, min(REGION, capacity // 64 // BLOCK * BLOCK))
    regions = max(capacity // region, 1)
    count = min(regions, max(1, round(regions * fill)))
    # region 0 always holds data, like a partition table and boot area
    chosen = sorted({0, *source.rng.sample(range(1, regions), count - 1)}) if regions > 1 else [0]
    written = 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, capacity)
        for index in chosen:
            size = min(region, capacity - index * region)
            kind = "binary" if index == 0 else source.pick_kind()
            written += os.pwrite(fd, source.make(kind, size), index * region)
    finally:
        os.close(fd)
    return written
