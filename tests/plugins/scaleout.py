"""Tests marked `scaleout` need PostgreSQL and Redis; on the embedded default they skip, loudly."""

from __future__ import annotations

import os

import pytest

NEEDS = ("VAFLEET_DATABASE_URL", "VAFLEET_REDIS_URL")


def scaleout_configured() -> bool:
    return all(os.environ.get(name) for name in NEEDS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if scaleout_configured():
        return
    skip = pytest.mark.skip(
        reason="SCALE-OUT TEST NOT RUN: needs PostgreSQL and Redis; set VAFLEET_DATABASE_URL and "
        "VAFLEET_REDIS_URL (./vafleet test starts both and runs the suite again with them)"
    )
    for item in items:
        if item.get_closest_marker("scaleout"):
            item.add_marker(skip)
