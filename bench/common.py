"""Helpers shared by the benchmarks: timed child processes with their peak RSS, sizes, tables."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


@dataclass
class Measured:
    seconds: float
    peak_rss: int  # bytes, of the measured process itself
    stdout: str


def run_measured(argv: list[str], *, stdin: str | None = None, env: dict | None = None,
              cwd: str | os.PathLike | None = None) -> Measured:
    """Run one command; wall time and the peak RSS of that very process (from wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        tail = stdout[-1500:] + stderr[-3000:]
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {proc.returncode}:\n{tail}")
    return Measured(seconds, usage.ru_maxrss * 1024, stdout)


def tree_size(path: str | os.PathLike) -> int:
    """Sum of the file sizes under `path` (what the repository stores)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


def warm(path: str | os.PathLike) -> None:
    """Read a file once so every contender starts from the same warm page cache."""
    buf = bytearray(8 * MiB)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def python() -> str:
    return sys.executable


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
