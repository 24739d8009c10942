"""Lab appliances as real hosts (network namespaces + their own sshd) and the signed engine bundle.

Every appliance a test creates is destroyed afterwards; tests that need root skip loudly without it.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliances import REPO_DIR
from appliances.bundle import build_bundle
from appliances.labhost import LabHost

ROOT_PASSWORD = "Lab-Root-Pass-7"
USER_PASSWORD = "Lab-User-Pass-7"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/sbin/sshd").exists(),
    reason="LAB APPLIANCE TESTS SKIPPED: they need root, iproute2 and openssh-server "
           "(network namespaces + their own sshd). Run the suite as root to exercise them.")


def create_lab(count: int, **options) -> list[LabHost]:
    """Create `count` lab appliances at once; on any failure, destroy the ones made."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(LabHost.create, f"lab-va-{n}", ROOT_PASSWORD, USER_PASSWORD, n + 1, **options)
                   for n in range(count)]
    hosts, errors = [], []
    for future in futures:
        try:
            hosts.append(future.result())
        except Exception as exc:  # noqa: BLE001 - collected, re-raised after cleanup
            errors.append(exc)
    if errors:
        for host in hosts:
            host.destroy()
        raise errors[0]
    return hosts


@pytest.fixture(scope="module")
def fleet():
    hosts = create_lab(3)
    yield hosts
    for host in hosts:
        host.destroy()


@pytest.fixture
def lab_va():
    (host,) = create_lab(1)
    yield host
    host.destroy()


@pytest.fixture(scope="session")
def bundle():
    return build_bundle()


@pytest.fixture
def make_changed_bundle(tmp_path):
    """Bundles of copies of the engine whose content differs by one line each."""

    def make(tag: str = "a"):
        copy = tmp_path / f"engines-{tag}" / "engines"
        shutil.copytree(REPO_DIR / "engines", copy, ignore=shutil.ignore_patterns("__pycache__"))
        with open(copy / "errors.py", "a") as fh:
            fh.write(f"\n# changed for a re-injection test ({tmp_path.name}, {tag})\n")
        return build_bundle(copy, tmp_path / f"bundles-{tag}")

    return make


@pytest.fixture
def changed_bundle(make_changed_bundle):
    return make_changed_bundle("a")
