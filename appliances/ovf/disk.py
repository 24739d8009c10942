"""A stand-in guest disk: a valid, empty stream-optimized sparse VMDK (what OVF packages carry).

Layout (VMDK 5.0, stream-optimized): header sector, embedded descriptor, grain directory marker
and an all-zero grain directory (no grain tables: every sector reads as zero), footer marker,
footer (the header with the grain directory's offset), end-of-stream marker. A few KiB for any
capacity; deterministic, so the package is cached by content.
"""

from __future__ import annotations

import struct

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains
GTES_PER_GT = 512
MAGIC = 0x564D444B  # "KDMV"
FLAGS = 0x1 | 0x10000 | 0x20000  # valid newline test, compressed grains, markers
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
HEADER = struct.Struct("<IIIQQQQIQQQBccccH433s")


def _sectors(size: int) -> int:
    return -(-size // SECTOR)


def _header(capacity_sectors: int, descriptor_sectors: int, gd_offset: int, overhead: int) -> bytes:
    return HEADER.pack(MAGIC, 3, FLAGS, capacity_sectors, GRAIN_SECTORS, 1, descriptor_sectors, GTES_PER_GT, 0,
                       gd_offset, overhead, 0, b"\n", b" ", b"\r", b"\n", 1, b"")


def _marker(num_sectors: int, kind: int) -> bytes:
    return struct.pack("<QII", num_sectors, 0, kind).ljust(SECTOR, b"\0")


def _descriptor(capacity_sectors: int, name: str) -> bytes:
    cylinders = min(capacity_sectors // (255 * 63), 65535)
    return "\n".join([
        "# Disk DescriptorFile", "version=1", "CID=fffffffe", "parentCID=ffffffff",
        'createType="streamOptimized"', "", "# Extent description",
        f'RDONLY {capacity_sectors} SPARSE "{name}"', "", "# The Disk Data Base", "#DDB", "",
        'ddb.adapterType = "lsilogic"', f'ddb.geometry.cylinders = "{cylinders}"', 'ddb.geometry.heads = "255"',
        'ddb.geometry.sectors = "63"', 'ddb.virtualHWVersion = "13"', 'ddb.toolsInstallType = "4"', "",
    ]).encode()


def stream_optimized_vmdk(capacity_bytes: int, name: str) -> bytes:
    """An empty disk of `capacity_bytes` (a multiple of 64 KiB) as a stream-optimized VMDK."""
    if capacity_bytes <= 0 or capacity_bytes % (GRAIN_SECTORS * SECTOR):
        raise ValueError("the capacity must be a positive multiple of 64 KiB")
    capacity = capacity_bytes // SECTOR
    descriptor = _descriptor(capacity, name)
    desc_sectors = _sectors(len(descriptor))
    overhead = 1 + desc_sectors
    gd_entries = -(-capacity // (GRAIN_SECTORS * GTES_PER_GT))
    gd_sectors = _sectors(gd_entries * 4)
    gd_offset = overhead + 1  # after the grain directory marker
    parts = [
        _header(capacity, desc_sectors, GD_AT_END, overhead),
        descriptor.ljust(desc_sectors * SECTOR, b"\0"),
        _marker(gd_sectors, MARKER_GD),
        bytes(gd_sectors * SECTOR),  # zero entries: no grain tables, the disk reads as zeros
        _marker(1, MARKER_FOOTER),
        _header(capacity, desc_sectors, gd_offset, overhead),
        _marker(0, MARKER_EOS),
    ]
    return b"".join(parts)
