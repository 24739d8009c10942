"""vCenter simulator fixtures: a shared standard lab, and a factory for custom inventory shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import vcsim
from tests.vsphere.helpers import STANDARD


@pytest.fixture(scope="session")
def vcsim_lab() -> Iterator[vcsim.Simulator]:
    """The standard lab, shared by the tests that only read it."""
    with vcsim.running(STANDARD) as simulator:
        yield simulator


@pytest.fixture
def vcsim_factory() -> Iterator[Callable[..., vcsim.Simulator]]:
    """Start simulators of any shape (Shape fields as keywords); all are stopped after the test."""
    started: list[vcsim.Simulator] = []

    def start(shape: vcsim.Shape | None = None, **fields) -> vcsim.Simulator:
        simulator = vcsim.start(shape or vcsim.Shape(**fields))
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def vcsim_own(vcsim_factory) -> vcsim.Simulator:
    """A standard lab of its own, for tests that change the inventory."""
    return vcsim_factory(STANDARD)
