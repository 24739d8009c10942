"""Fixtures for the engine tests: small synthetic disks, a local repository, the engine process."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engines import api

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"
KDF_N = 1 << 12  # cheap scrypt keeps tests fast; the format stores the cost, so any value opens
CHUNK = 64 << 10  # small chunks: many chunks from small images


def write_image(path: Path, size: int, seed: int, chunk: int = CHUNK, layout: str = "rtzh") -> Path:
    """A sparse disk of `size` bytes cycling chunk-sized regions: r random, t text, z written zeros, h hole."""
    rnd = random.Random(seed)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for i, offset in enumerate(range(0, size, chunk)):
            n = min(chunk, size - offset)
            kind = layout[i % len(layout)]
            if kind == "r":
                data = rnd.randbytes(n)
            elif kind == "t":
                line = f"{offset:012d} INFO request served in {rnd.randint(1, 999)} ms\n".encode()
                data = (line * (n // len(line) + 1))[:n]
            elif kind == "z":
                data = bytes(n)
            else:
                continue
            fh.seek(offset)
            fh.write(data)
    return path


def mutate(path: Path, offsets: list[int], seed: int, length: int = 4096) -> list[list[int]]:
    """Overwrite small ranges in place; returns them as a changed-extent list (what CBT reports)."""
    rnd = random.Random(seed)
    with open(path, "r+b") as fh:
        for offset in offsets:
            fh.seek(offset)
            fh.write(rnd.randbytes(length))
    return [[o, length] for o in offsets]


@dataclass
class Repo:
    path: Path
    target: dict
    passphrase: str = PASSPHRASE


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    target = {"type": "local", "path": str(tmp_path / "repo")}
    api.init(target, PASSPHRASE, chunk_size=CHUNK, kdf_n=KDF_N)
    return Repo(tmp_path / "repo", target)


@dataclass
class EngineRun:
    returncode: int
    events: list[dict]
    stderr: str

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def result(self) -> dict:
        results = self.of("result")
        assert results, f"no result event; events: {self.events}; stderr: {self.stderr[-2000:]}"
        return results[-1]

    @property
    def error(self) -> dict:
        errors = self.of("error")
        assert errors, f"no error event; events: {self.events}; stderr: {self.stderr[-2000:]}"
        return errors[-1]


def engine_cmd() -> list[str]:
    return [sys.executable, "-m", "engines"]


def parse_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def run_engine(job: dict, timeout: float = 60) -> EngineRun:
    proc = subprocess.run(engine_cmd(), input=json.dumps(job).encode(), capture_output=True, cwd=ROOT,
                          timeout=timeout)
    return EngineRun(proc.returncode, parse_events(proc.stdout.decode()), proc.stderr.decode())


def backup_job(repo: Repo, vm: str, disks: list[dict], **extra) -> dict:
    return {"operation": "backup", "target": repo.target, "passphrase": repo.passphrase, "vm": {"name": vm},
            "disks": disks, **extra}
