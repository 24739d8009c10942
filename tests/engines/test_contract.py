"""The job spec parser: what the server sends, and what it gets back for bad input."""

from __future__ import annotations

import json

import pytest

from engines.contract import BadJobSpec, JobSpec, encode_event, error_event, progress_event


def test_job_spec_parses_backup_with_cbt():
    job = JobSpec.from_json(json.dumps({
        "operation": "backup", "target": {"type": "sftp", "host": "127.0.0.1"}, "passphrase": "p",
        "vm": {"name": "web 01", "config": {"cpus": 2}}, "parent": "x",
        "disks": [{"name": "d", "path": "/dev/sdb", "changed_extents": [[0, 4096], [8192, 512]], "change_id": "7"}],
    }))
    assert job.vm == "web 01" and job.vm_config == {"cpus": 2}
    assert job.disks[0].changed_extents == [(0, 4096), (8192, 512)]
    assert "passphrase" not in repr(job) and "'p'" not in repr(job)


@pytest.mark.parametrize("doc,needle", [
    ("[]", "JSON object"),
    ('{"operation": "backup"}', "target"),
    ('{"operation": "copy", "target": {"type": "local"}}', "Unknown operation"),
    ('{"operation": "backup", "target": {"type": "local"}, "disks": [{"changed_extents": [[1]]}]}', "pairs"),
    ('{"operation": "backup", "target": {"type": "local"}, "disks": [{"changed_extents": [[-4096, 10]]}]}',
     "non-negative"),
])
def test_bad_job_specs_are_refused_with_a_sentence(doc, needle):
    with pytest.raises(BadJobSpec, match=needle):
        JobSpec.from_json(doc)


def test_events_are_single_json_lines():
    line = encode_event(error_event("target_full", "The target is full: prune.\nSecond line"))
    assert "\n" not in line and json.loads(line)["code"] == "target_full"
    progress = progress_event("backup", 50, 100, 10.4, 4.96)
    assert progress["type"] == "progress" and progress["rate"] == 10 and progress["eta"] == 5.0
