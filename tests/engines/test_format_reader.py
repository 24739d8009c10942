"""A reader written from docs/repository-format.md alone (no engines.repository import) restores a disk."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from urllib.parse import quote

import blake3
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from engines import api
from engines.contract import DiskSpec
from tests.engines.conftest import CHUNK, PASSPHRASE, write_image


def open_blob(enc_key: bytes, raw: bytes, context: bytes) -> bytes:
    flags, nonce = raw[0], raw[1:13]
    payload = AESGCM(enc_key).decrypt(nonce, raw[13:], context + bytes([flags]))
    return zstandard.ZstdDecompressor().decompressobj().decompress(payload) if flags & 1 else payload


def read_disk(repo: Path, passphrase: str, vm: str) -> tuple[dict, bytes]:
    config = json.loads((repo / "config").read_text())
    assert config["format"] == "vafleet-repository" and config["version"] == 1
    kdf = config["kdf"]
    wrapping = Scrypt(salt=base64.b64decode(kdf["salt"]), length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
        passphrase.encode())
    master = AESGCM(wrapping).decrypt(base64.b64decode(config["keys"]["nonce"]),
                                      base64.b64decode(config["keys"]["wrapped"]),
                                      b"vafleet-keys:" + config["id"].encode())
    enc_key, id_key = master[:32], master[32:]
    folder = repo / "snapshots" / (quote(vm, safe="-_.@+~") or "%00")
    (manifest_file,) = list(folder.iterdir())
    context = b"vafleet-manifest:" + vm.encode() + b"\0" + manifest_file.name.encode()
    content = open_blob(enc_key, manifest_file.read_bytes(), context)
    magic, version, length = struct.unpack_from("<4sHI", content, 0)
    assert (magic, version) == (b"VAFM", 1)
    meta = json.loads(content[10 : 10 + length])
    disk = meta["disks"][0]
    cs = meta["chunk_size"]
    image = bytearray(disk["size"])
    table = content[10 + length : 10 + length + 40 * disk["entries"]]
    ids = {}
    for index, cid in struct.iter_unpack("<Q32s", table):
        plain = open_blob(enc_key, (repo / "chunks" / cid.hex()[:2] / cid.hex()).read_bytes(), cid)
        assert blake3.blake3(plain, key=id_key).digest() == cid
        image[index * cs : index * cs + len(plain)] = plain
        ids[index] = cid
    # whole-disk digest as documented
    n = -(-disk["size"] // cs)
    h = blake3.blake3(struct.pack("<Q", disk["size"]))
    for i in range(n):
        length_i = min(cs, disk["size"] - i * cs)
        h.update(ids.get(i) or blake3.blake3(bytes(length_i), key=id_key).digest())
    assert h.hexdigest() == disk["digest"]
    return meta, bytes(image)


@pytest.mark.parametrize("vm", ["plain", "web 01/é"])
def test_documented_format_reads_back_a_backup(repo, tmp_path, vm):
    disk = write_image(tmp_path / "disk.img", 9 * CHUNK + 777, seed=51)
    api.backup(repo.target, PASSPHRASE, vm, [DiskSpec("disk0", str(disk))], vm_config={"os": "linux"})
    meta, image = read_disk(repo.path, PASSPHRASE, vm)
    assert image == disk.read_bytes()
    assert meta["vm"] == vm and meta["vm_config"] == {"os": "linux"} and meta["kind"] == "full"
    stored = [p for p in (repo.path / "chunks").rglob("*") if p.is_file()]
    assert {p.read_bytes()[0] for p in stored} == {0, 1}  # random stored raw, text compressed


def test_chunk_index_matches_a_set():
    import random

    from engines.repository.index import ChunkIndex

    rnd = random.Random(5)
    ids = [rnd.randbytes(32) for _ in range(5000)]
    index = ChunkIndex()
    for prefix in range(256):
        index.add_folder(prefix, [i for i in ids[:4000] if i[0] == prefix])
    index.add(ids[4000])
    assert len(index) == 4001
    assert all(i in index for i in ids[:4001])
    assert not any(i in index for i in ids[4001:])
    assert bytes(32) not in index and b"\xff" * 32 not in index
