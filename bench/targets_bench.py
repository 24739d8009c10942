"""Target throughput on loopback: each network target against its real server (started by the
test harness), plus the local folder, writing then reading N objects with T threads. The write
figure includes the target's sync() at the end, as a backup makes its chunks durable.

Run (as root): .venv/bin/python bench/targets_bench.py [--objects 256] [--size-mib 1] [--threads 4]
               [--targets local,sftp,ftp,ftps,smb,nfs] [--repeat 1]
Prints a table in MB/s (10^6 bytes per second); it never passes or fails on time. The figures are
loopback figures on this machine (client and server share the CPUs), not network figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.targets import TargetSpec, open_target  # noqa: E402
from tests.harness.storage import STARTERS, ServerUnavailable  # noqa: E402

SERVER_OF = {"sftp": "sftp", "ftp": "ftp", "ftps": "ftp", "smb": "smb", "nfs": "nfs"}


def measure(spec: TargetSpec, objects: int, size: int, threads: int) -> tuple[float, float]:
    payload = os.urandom(size)
    names = [f"chunks/{i % 256:02x}/{i:06d}" for i in range(objects)]
    with open_target(spec) as target:
        target.makedirs("chunks")
        # One put and get per thread first, so connection setup is not part of the timing.
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda n: target.put(f"warm/{n}", b"w"), range(threads)))
            started = time.perf_counter()
            list(pool.map(lambda name: target.put(name, payload), names))
            target.sync()  # as a backup does before its manifest: the writes count once durable
            wrote = time.perf_counter() - started
            started = time.perf_counter()
            sizes = list(pool.map(lambda name: len(target.get(name)), names))
            read = time.perf_counter() - started
        if sum(sizes) != objects * size:
            raise SystemExit(f"{spec.type}: read back {sum(sizes)} bytes, expected {objects * size}")
        for name in names:
            target.delete(name)
    total = objects * size / 1e6
    return total / wrote, total / read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=256)
    parser.add_argument("--size-mib", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="runs per target; the best is shown")
    parser.add_argument("--targets", default="local,sftp,ftp,ftps,smb,nfs")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # smbprotocol logs every session at INFO
    size = int(args.size_mib * (1 << 20))
    kinds = [k.strip() for k in args.targets.split(",") if k.strip()]
    servers = {}
    scratch = Path(tempfile.mkdtemp(prefix="vafleet-bench-targets-"))
    print(f"{args.objects} objects x {args.size_mib:g} MiB, {args.threads} threads, loopback, {os.cpu_count()} CPUs")
    print(f"{'target':<8} {'write MB/s':>11} {'read MB/s':>10}")
    try:
        for kind in kinds:
            if kind == "local":
                spec = TargetSpec(type="local", path=str(scratch / "local"))
            else:
                server_kind = SERVER_OF[kind]
                try:
                    if server_kind not in servers:
                        servers[server_kind] = STARTERS[server_kind]()
                except ServerUnavailable as exc:
                    print(f"{kind:<8} skipped: {exc}")
                    continue
                server = servers[server_kind]
                spec = server.spec(f"bench-{kind}", tls=True) if kind == "ftps" else server.spec(f"bench-{kind}")
            runs = [measure(spec, args.objects, size, args.threads) for _ in range(args.repeat)]
            write, read = max(r[0] for r in runs), max(r[1] for r in runs)
            print(f"{kind:<8} {write:>11.0f} {read:>10.0f}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
