"""The VA fleet: lab appliances, the transports that reach a VA, and the signed engine bundle.

The modules here import no Django models, so they work in the server, in benchmarks and in tests
alike; the var directory is the one the server uses (`VAFLEET_VAR_DIR`, default `<repo>/var`).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """The server's var directory (same rule as `vaproject.settings.VAR_DIR`)."""
    path = Path(os.environ.get("VAFLEET_VAR_DIR") or REPO_DIR / "var").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
