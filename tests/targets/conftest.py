"""Fixtures for the target tests: the real storage servers on loopback (started once per test
session, always stopped) and a fresh, empty repository folder on each target per test."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator

import pytest

from engines.targets import Target, TargetSpec, open_target
from tests.harness.storage import STARTERS, ServerUnavailable, StorageServer

NETWORK_TYPES = ("sftp", "ftp", "ftps", "smb", "nfs")
ALL_TYPES = ("local", *NETWORK_TYPES)
SERVER_OF = {"sftp": "sftp", "ftp": "ftp", "ftps": "ftp", "smb": "smb", "nfs": "nfs"}
_folders = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/targets/" in item.nodeid:
            item.add_marker(pytest.mark.storage)


class Servers:
    """Starts each server on first use; all are stopped at the end of the session."""

    def __init__(self) -> None:
        self.running: dict[str, StorageServer] = {}
        self.failed: dict[str, str] = {}

    def __getitem__(self, target_type: str) -> StorageServer:
        kind = SERVER_OF[target_type]
        if kind in self.failed:
            pytest.skip(self.failed[kind])
        if kind not in self.running:
            try:
                self.running[kind] = STARTERS[kind]()
            except ServerUnavailable as exc:
                self.failed[kind] = str(exc)
                pytest.skip(str(exc))
        return self.running[kind]

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    started.stop()


def new_folder() -> str:
    return f"repo {next(_folders)} é"  # a space and a non-ASCII letter in every repository path


def spec_for(target_type: str, servers: Servers, tmp_path, folder: str | None = None, **options) -> TargetSpec:
    folder = folder or new_folder()
    if target_type == "local":
        if importlib.util.find_spec("engines.targets.local") is None:
            pytest.skip("engines/targets/local.py is not there yet")
        return TargetSpec(type="local", path=str(tmp_path / folder), options=options)
    server = servers[target_type]
    return server.spec(folder, tls=True, **options) if target_type == "ftps" else server.spec(folder, **options)


@pytest.fixture(params=ALL_TYPES)
def target_type(request) -> str:
    return request.param


@pytest.fixture(params=NETWORK_TYPES)
def network_type(request) -> str:
    return request.param


@pytest.fixture
def target(target_type: str, servers: Servers, tmp_path) -> Iterator[Target]:
    with open_target(spec_for(target_type, servers, tmp_path)) as opened:
        yield opened
