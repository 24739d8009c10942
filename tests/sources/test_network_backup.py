"""Network mode end to end: back up a disk over HTTPS range reads, restore it sparse, check it."""

from __future__ import annotations

import hashlib
import os

from engines import api
from engines.contract import DiskSpec
from tests.harness.rangeserver import RangeServer
from tests.sources.conftest import MiB, make_sparse

PASSPHRASE = "correct horse"


def test_backup_over_https_restores_the_same_sparse_disk(tmp_path):
    datastore = tmp_path / "datastore"
    datastore.mkdir()
    size = 12 * MiB
    content = make_sparse(datastore / "vm-flat.vmdk", size, [(MiB, 2 * MiB), (7 * MiB + 4096, 8192), (11 * MiB, MiB)])
    target = {"type": "local", "path": str(tmp_path / "repo")}
    api.init(target, PASSPHRASE, kdf_n=1 << 10)
    with RangeServer(datastore, user="reader", password="pw") as server:
        options = {"auth": ["reader", "pw"], "thumbprint": server.thumbprint, "readahead": 2}
        disk = DiskSpec(name="scsi0:0", path=server.url("vm-flat.vmdk"), options=options)
        result = api.backup(target, PASSPHRASE, "web 01", [disk], threads=2)
    output = tmp_path / "restored.img"
    api.restore(target, PASSPHRASE, result["restore_point"], [DiskSpec(name="scsi0:0", path=str(output))],
                check_digest=True)
    assert hashlib.sha256(output.read_bytes()).digest() == hashlib.sha256(content).digest()
    assert os.stat(output).st_blocks * 512 <= 4 * MiB  # the 8 MiB of holes stayed holes
