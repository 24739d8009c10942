"""The simulator harness itself: cached build, loopback only, and it never outlives its parent."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import vcsim

pytestmark = pytest.mark.vcsim


def test_build_is_reused_until_the_source_changes():
    first = vcsim.build()
    mtime = first.stat().st_mtime_ns

    again = vcsim.build()

    assert again == first and again.stat().st_mtime_ns == mtime
    assert first.name == f"vcsim-{vcsim.source_hash()}"


def test_refuses_addresses_other_than_loopback():
    result = subprocess.run(
        [str(vcsim.build()), "-listen=192.0.2.10", "-vms=1"], capture_output=True, text=True, timeout=30
    )

    assert result.returncode != 0
    assert "only loopback addresses are allowed" in result.stderr


def test_exits_when_its_parent_closes_stdin():
    simulator = vcsim.start(vcsim.Shape(vms=1))
    try:
        simulator.process.stdin.close()  # what happens when the test process dies

        assert simulator.process.wait(timeout=10) == 0
    finally:
        simulator.stop()
    assert not simulator.workdir.exists()


def test_shape_counts(vcsim_factory):
    simulator = vcsim_factory(datacenters=2, clusters=1, cluster_hosts=2, standalone_hosts=1, vms=5)

    assert simulator.hosts == 6 and simulator.vms == 10
