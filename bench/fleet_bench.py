"""Fleet benchmark: deploy lab VAs, inject the engine into all, then re-check versions concurrently.

Run as root:  .venv/bin/python bench/fleet_bench.py [--vas 4] [--checks 50]
Prints figures; never passes or fails on time. Every lab VA it creates is destroyed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliances.bundle import build_bundle  # noqa: E402
from appliances.injection import bootstrap, ensure_engine, fleet_key  # noqa: E402
from appliances.labhost import LabHost  # noqa: E402
from appliances.transports.ssh import SSHTransport  # noqa: E402

PASSWORD = "Bench-Root-Pass-1"


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def version_check(host: LabHost, bundle) -> tuple[float, float]:
    """One server-side 'before every job' check on a fresh connection: (connect s, check s)."""
    info = host.info
    t, connect = timed(lambda: SSHTransport(info.address, info.port, "root", host_key=info.host_key,
                                            key=fleet_key()))
    with t:
        result, check = timed(ensure_engine, t, bundle)
    assert not result.uploaded
    return connect, check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vas", type=int, default=4)
    parser.add_argument("--checks", type=int, default=50)
    args = parser.parse_args()
    bundle, build_s = timed(build_bundle)
    hosts: list[LabHost] = []
    try:
        with ThreadPoolExecutor(args.vas) as pool:
            start = time.perf_counter()
            hosts = list(pool.map(lambda n: LabHost.create(f"bench-va-{n}", PASSWORD, PASSWORD, 2), range(args.vas)))
            deploy_s = time.perf_counter() - start
            start = time.perf_counter()
            transports = list(pool.map(lambda h: bootstrap(h.info.address, h.info.port, h.info.host_key, PASSWORD),
                                       hosts))
            bootstrap_s = time.perf_counter() - start
            start = time.perf_counter()
            results = list(pool.map(lambda t: ensure_engine(t, bundle), transports))
            inject_s = time.perf_counter() - start
        sent = sum(r.bytes_sent for r in results)
        for t in transports:
            t.close()
        with ThreadPoolExecutor(args.checks) as pool:
            start = time.perf_counter()
            checks = list(pool.map(lambda n: version_check(hosts[n % len(hosts)], bundle), range(args.checks)))
            checks_s = time.perf_counter() - start
        with SSHTransport(hosts[0].info.address, 22, "root", host_key=hosts[0].info.host_key, key=fleet_key()) as t:
            reused = [timed(ensure_engine, t, bundle)[1] for _ in range(20)]
    finally:
        for host in hosts:
            host.destroy()
    connects, rounds = [c for c, _ in checks], [r for _, r in checks]
    print(f"bundle: {bundle.version}, {bundle.size / 1e6:.1f} MB (build or cache hit {build_s:.2f} s)")
    print(f"deploy {args.vas} lab VAs concurrently: {deploy_s:.2f} s; bootstrap (password -> key): {bootstrap_s:.2f} s")
    print(f"inject into {args.vas} VAs concurrently: {inject_s:.2f} s wall, {sent / 1e6:.1f} MB sent "
          f"({sent / 1e6 / inject_s:.0f} MB/s aggregate)")
    print(f"{args.checks} concurrent version checks (fresh connection each, nothing to send): {checks_s:.2f} s wall; "
          f"connect p50 {statistics.median(connects) * 1e3:.0f} ms, check p50 {statistics.median(rounds) * 1e3:.0f} ms"
          f" / max {max(rounds) * 1e3:.0f} ms")
    print(f"version check on a kept connection (one exec round trip): p50 {statistics.median(reused) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
