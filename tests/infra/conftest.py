"""Fixtures for the infrastructure tests: fresh channel layers and a second OS process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from core.channel_layer import DatabaseChannelLayer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_layer():
    """Fresh database channel layers, polled fast, closed (database connection too) afterwards."""
    made: list[DatabaseChannelLayer] = []

    def make(**config) -> DatabaseChannelLayer:
        layer = DatabaseChannelLayer(poll_interval=0.02, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        async_to_sync(layer.close)()


def worker_command(*args: str, prefix: str = "", database_layer: bool = False) -> list[str]:
    """The command line of a separate process that works on this test's database."""
    command = [sys.executable, "-m", "tests.infra.worker_process", "--database", str(connection.settings_dict["NAME"])]
    if prefix:
        command += ["--layer-prefix", prefix]
    if database_layer:
        command.append("--database-layer")
    return [*command, *args]


def run_worker(*args: str, database_layer: bool = False) -> dict:
    """Run a command in a separate process and return what it printed (JSON)."""
    done = subprocess.run(
        worker_command(*args, database_layer=database_layer),
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"worker process failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])
