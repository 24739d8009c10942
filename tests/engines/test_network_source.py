"""Network mode end to end: the engine process backs up a disk read over HTTPS range requests."""

from __future__ import annotations

from engines import api
from engines.contract import DiskSpec
from tests.engines.conftest import PASSPHRASE, backup_job, run_engine, write_image
from tests.harness.rangeserver import RangeServer

USER, PASSWORD = "backup", "S3cret pass"


def test_backup_over_https_restores_the_same_bytes(repo, tmp_path):
    datastore = tmp_path / "datastore"
    (datastore / "web 01").mkdir(parents=True)
    disk = write_image(datastore / "web 01" / "web 01-flat.vmdk", 3 << 20, seed=61)
    with RangeServer(datastore, user=USER, password=PASSWORD) as server:
        source = {"name": "Hard disk 1", "path": server.url("web 01/web 01-flat.vmdk"),
                  "options": {"auth": [USER, PASSWORD], "thumbprint": server.thumbprint}}
        run = run_engine(backup_job(repo, "web 01", [source], options={"threads": 4}))
        assert run.returncode == 0, run.error
        wrong = dict(source, options={"auth": [USER, "nope"], "thumbprint": server.thumbprint})
        failed = run_engine(backup_job(repo, "web 01", [wrong]))
    assert failed.returncode == 1 and failed.error["code"] == "source_auth_failed"
    out = tmp_path / "out.img"
    api.restore(repo.target, PASSPHRASE, run.result["restore_point"], [DiskSpec("Hard disk 1", str(out))],
                check_digest=True)
    assert out.read_bytes() == disk.read_bytes()
    assert len(api.list_restore_points(repo.target, PASSPHRASE)["restore_points"]) == 1
