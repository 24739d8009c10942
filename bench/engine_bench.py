"""Engine benchmark: VA Fleet against restic and borg on the shared synthetic disk, in one run.

Run: .venv/bin/python bench/engine_bench.py [--size 4G] [--json out.json] [--network]
Needs restic and borgbackup (scripts/install-bench-tools.sh). Builds the shared image once
(../shared/bench/mkimage.py, cached in --workdir on local disk), then times full backup,
incremental after a 5 % change (mutate.py) with and without the changed-extent list, and a
full restore, each step in a fresh process (peak RSS from wait4). Every restore is checked
against the image's sha256. Prints figures; it never passes or fails on time.
Targets (ratios in one run): full >= 3x restic and borg, CBT incremental >= 8x restic's
incremental, restore >= 3.5x restic, VA Fleet peak RSS <= 256 MiB, stored size <= restic's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import SHARED_BENCH, MiB, load, run_measured, sha256_file, table, tree_size, warm  # noqa: E402

PASSPHRASE = "bench passphrase"
STEPS = ("full", "incremental_cbt", "incremental", "restore", "restore_durable")
STEP_TITLES = {"full": "full backup", "incremental_cbt": "incremental, CBT extents",
               "incremental": "incremental, full read", "restore": "full restore",
               "restore_durable": "full restore + fsync"}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class Contender:
    name = ""

    def __init__(self, run: Path):
        self.run = run
        self.repo = run / f"repo-{self.name}"
        self.env = {**os.environ, "HOME": str(run / f"home-{self.name}")}
        Path(self.env["HOME"]).mkdir(exist_ok=True)
        self.peak_rss = 0
        self.disk = run / "disk.img"

    def measure(self, argv: list[str], stdin: str | None = None, cwd: Path | None = None):
        result = run_measured(argv, stdin=stdin, env=self.env, cwd=cwd)
        self.peak_rss = max(self.peak_rss, result.peak_rss)
        return result


class VaFleet(Contender):
    name = "vafleet"

    def __init__(self, run: Path, threads: int):
        super().__init__(run)
        self.threads = threads
        self.points: dict[str, str] = {}

    def job(self, repo: Path, operation: str, **fields) -> dict:
        spec = {"operation": operation, "target": {"type": "local", "path": str(repo)},
                "passphrase": PASSPHRASE, "options": {"threads": self.threads}, **fields}
        result = self.measure([sys.executable, "-m", "engines"], stdin=json.dumps(spec), cwd=REPO)
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        done = [e for e in events if e.get("type") == "result"]
        if not done:
            raise RuntimeError(f"engine {operation} gave no result: {events[-3:]}")
        return {"seconds": result.seconds, "result": done[-1]}

    def init(self) -> None:
        self.job(self.repo, "init")

    def backup(self, step: str, disk: Path, cbt: list | None = None) -> float:
        repo = self.repo
        if step == "incremental":  # a twin of the repository as it was after the full backup
            repo = self.run / "repo-vafleet-nocbt"
        entry = {"name": "disk0", "path": str(disk)}
        if cbt is not None:
            entry["changed_extents"] = cbt
        parent = self.points.get("full", "")
        out = self.job(repo, "backup", vm={"name": "bench vm"}, disks=[entry], parent=parent)
        self.points[step] = out["result"]["restore_point"]
        if step == "full":
            subprocess.run(["cp", "-a", "--reflink=auto", str(self.repo), str(self.run / "repo-vafleet-nocbt")],
                           check=True)
        return out["seconds"]

    def restore(self, out: Path) -> tuple[float, Path]:
        target = out / "disk0.img"
        res = self.job(self.repo, "restore", restore_point=self.points["incremental_cbt"],
                       vm={"name": "bench vm"}, disks=[{"name": "disk0", "path": str(target)}])
        return res["seconds"], target

    def stored(self) -> int:
        return tree_size(self.repo)


class Restic(Contender):
    name = "restic"

    def __init__(self, run: Path):
        super().__init__(run)
        self.env.update(RESTIC_PASSWORD=PASSPHRASE, RESTIC_CACHE_DIR=str(run / "cache-restic"))

    def init(self) -> None:
        self.measure(["restic", "init", "--repo", str(self.repo)])

    def backup(self, step: str, disk: Path, cbt: list | None = None) -> float:
        return self.measure(["restic", "-r", str(self.repo), "backup", "--quiet", str(disk)]).seconds

    def restore(self, out: Path) -> tuple[float, Path]:
        seconds = self.measure(["restic", "-r", str(self.repo), "restore", "latest", "--target", str(out)]).seconds
        return seconds, out / str(self.disk).lstrip("/")

    def stored(self) -> int:
        return tree_size(self.repo)


class Borg(Contender):
    name = "borg"

    def __init__(self, run: Path):
        super().__init__(run)
        self.env.update(BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(run / "home-borg"))
        self.archives = 0

    def init(self) -> None:
        self.measure(["borg", "init", "-e", "repokey", str(self.repo)])

    def backup(self, step: str, disk: Path, cbt: list | None = None) -> float:
        self.archives += 1
        archive = f"{self.repo}::a{self.archives}"
        return self.measure(["borg", "create", "--compression", "zstd,3", archive, str(disk)]).seconds

    def restore(self, out: Path) -> tuple[float, Path]:
        seconds = self.measure(["borg", "extract", f"{self.repo}::a{self.archives}"], cwd=out).seconds
        return seconds, out / str(self.disk).lstrip("/")

    def stored(self) -> int:
        return tree_size(self.repo)


def settle(disk: Path | None = None) -> None:
    """Start every timed step alike: no dirty pages left from the step before, the image cached."""
    os.sync()
    if disk is not None:
        warm(disk)


def fsync_seconds(path: Path) -> float:
    """What making a restored disk durable costs (the engine fsyncs; restic and borg do not)."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def ensure_image(work: Path, size: str, seed: int) -> Path:
    image = work / f"base-{size}-seed{seed}.img"
    if not image.exists():
        partial = image.with_suffix(".partial")
        subprocess.run([sys.executable, str(SHARED_BENCH / "mkimage.py"), str(partial), "--size", size,
                        "--seed", str(seed)], check=True)
        partial.rename(image)
    return image


def run_suite(args: argparse.Namespace, number: int = 0) -> dict:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base = ensure_image(work, args.size, args.seed)
    run = work / f"run-{args.size}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    disk = run / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(base), str(disk)], check=True)
    size = disk.stat().st_size
    contenders: list[Contender] = []
    if "vafleet" in args.contenders:
        contenders.append(VaFleet(run, args.threads))
    if "restic" in args.contenders and shutil.which("restic"):
        contenders.append(Restic(run))
    if "borg" in args.contenders and shutil.which("borg"):
        contenders.append(Borg(run))
    shift = number % len(contenders)  # rotate who goes first: load on a shared machine drifts
    contenders = contenders[shift:] + contenders[:shift]
    results: dict[str, dict] = {c.name: {} for c in contenders}
    for c in contenders:
        c.init()
        settle(disk)
        results[c.name]["full"] = c.backup("full", disk)
        results[c.name]["stored_full"] = c.stored()
        print(f"  {c.name}: full backup {results[c.name]['full']:.1f} s", flush=True)
    cbt_path = run / "changed.json"
    subprocess.run([sys.executable, str(SHARED_BENCH / "mutate.py"), str(disk), "--percent", str(args.percent),
                    "--seed", str(args.mutate_seed), "--cbt", str(cbt_path)], check=True, capture_output=True)
    cbt = json.loads(cbt_path.read_text())
    expected = sha256_file(disk)
    for c in contenders:
        steps = ("incremental_cbt", "incremental") if c.name == "vafleet" else ("incremental",)
        for step in steps:
            settle(disk)
            results[c.name][step] = c.backup(step, disk, cbt["extents"] if step == "incremental_cbt" else None)
            print(f"  {c.name}: {STEP_TITLES[step]} {results[c.name][step]:.1f} s", flush=True)
        results[c.name]["stored"] = c.stored()
    for c in contenders:
        out = run / f"restore-{c.name}"
        out.mkdir()
        settle()
        seconds, restored = c.restore(out)
        results[c.name]["restore"] = seconds
        results[c.name]["restore_durable"] = seconds + fsync_seconds(restored)
        results[c.name]["restore_ok"] = sha256_file(restored) == expected
        results[c.name]["peak_rss"] = c.peak_rss
        print(f"  {c.name}: restore {seconds:.1f} s, digest {'ok' if results[c.name]['restore_ok'] else 'WRONG'}",
              flush=True)
        shutil.rmtree(out)
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    return {"size": size, "changed_bytes": cbt["changed_bytes"], "threads": args.threads,
            "load": load(), "results": results}


def median_of(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds (restores must be right in every round)."""
    import statistics

    merged = dict(rounds[-1], load=" / ".join(r["load"] for r in rounds), results={})
    for name in rounds[0]["results"]:
        figures = [r["results"][name] for r in rounds]
        merged["results"][name] = {
            key: all(f[key] for f in figures) if key == "restore_ok" else statistics.median(f[key] for f in figures)
            for key in figures[0]
        }
    return merged


def report(data: dict) -> str:
    size, results = data["size"], data["results"]
    restic = results.get("restic", {})
    rows = []
    for name, figures in sorted(results.items()):
        for step in STEPS:
            if step not in figures:
                continue
            seconds = figures[step]
            peer = restic.get("incremental" if step == "incremental_cbt" else step)
            ratio = f"{peer / seconds:.1f}x" if peer else "-"
            rows.append([name, STEP_TITLES[step], f"{seconds:.2f}", f"{size / MiB / seconds:.0f}", ratio])
    lines = [table(["contender", "step", "seconds", "MB/s of disk", "vs restic"], rows), ""]
    rows = [[n, f"{f['stored_full'] / MiB:.0f}", f"{f['stored'] / MiB:.0f}", f"{f['peak_rss'] / MiB:.0f}",
             "ok" if f["restore_ok"] else "WRONG"] for n, f in sorted(results.items())]
    lines += [table(["contender", "stored after full MiB", "after incremental MiB", "peak RSS MiB", "restore"],
                    rows), ""]
    va, borg = results.get("vafleet"), results.get("borg")
    if va and restic:
        checks = [("full vs restic", restic["full"] / va["full"], 3.0),
                  ("CBT incremental vs restic incremental", restic["incremental"] / va["incremental_cbt"], 8.0),
                  ("restore vs restic", restic["restore"] / va["restore"], 3.5),
                  ("restore + fsync vs restic's", restic["restore_durable"] / va["restore_durable"], 3.5)]
        if borg:
            checks.insert(1, ("full vs borg", borg["full"] / va["full"], 3.0))
        for title, ratio, goal in checks:
            lines.append(f"{title}: {ratio:.2f}x (target >= {goal}x) {'met' if ratio >= goal else 'MISSED'}")
        lines.append(f"peak RSS {va['peak_rss'] / MiB:.0f} MiB (target <= 256) "
                     f"{'met' if va['peak_rss'] <= 256 * MiB else 'MISSED'}")
        lines.append(f"stored {va['stored'] / MiB:.0f} MiB vs restic {restic['stored'] / MiB:.0f} MiB "
                     f"{'met' if va['stored'] <= restic['stored'] else 'MISSED'}")
    lines.append(f"disk {size / MiB:.0f} MiB, changed {data['changed_bytes'] / MiB:.0f} MiB, "
                 f"threads {data['threads']}, load average at the end {data['load']}")
    return "\n".join(lines)


def network_figures(args: argparse.Namespace) -> dict:
    """HTTPS range reads of the image under added latency: serial vs parallel vs read-ahead."""
    import threading

    from engines.sources.http import HttpSource

    work = Path(args.workdir)
    image = ensure_image(work, args.size, args.seed)
    server = subprocess.Popen([sys.executable, "-m", "tests.harness.rangeserver", str(work), "--latency-ms",
                               str(args.latency_ms)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        url = info["url"].replace("/folder/?", f"/folder/{image.name}?")
        total = min(args.network_mib * MiB, image.stat().st_size)
        rows, figures = [], {}
        for title, threads, readahead in [("1 reader, serial", 1, 0), ("2 readers", 2, 0), ("4 readers", 4, 0),
                                          ("8 readers", 8, 0), ("1 reader, read-ahead 8", 1, 8)]:
            with HttpSource(url, thumbprint=info["thumbprint"], readahead=readahead) as source:
                offsets = iter(range(0, total, MiB))
                lock = threading.Lock()

                def reader(source: HttpSource = source, offsets=offsets, lock=lock) -> None:
                    buf = memoryview(bytearray(MiB))
                    while True:
                        with lock:
                            offset = next(offsets, None)
                        if offset is None:
                            return
                        source.read_into(offset, buf)

                started = time.perf_counter()
                pool = [threading.Thread(target=reader) for _ in range(threads)]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
                seconds = time.perf_counter() - started
            figures[title] = round(total / MiB / seconds, 1)
            rows.append([title, f"{seconds:.2f}", f"{figures[title]:.0f}"])
        print(f"\nHTTPS range reads of {total // MiB} MiB in 1 MiB requests, {args.latency_ms:g} ms added per request")
        print(table(["readers", "seconds", "MB/s"], rows))
        backups = network_backups(args, work, url, info["thumbprint"])
        return {"latency_ms": args.latency_ms, "mib": total // MiB, "mb_per_s": figures, "backups": backups}
    finally:
        server.terminate()
        server.wait()


def network_backups(args: argparse.Namespace, work: Path, url: str, thumbprint: str) -> dict:
    """Whole VA Fleet backups in network mode: the engine's workers (and read-ahead) against latency."""
    run = work / "run-network"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    engine = VaFleet(run, args.threads)
    rows, figures = [], {}
    try:
        for title, threads, readahead in [("2 workers", 2, 0), ("2 workers, read-ahead 8", 2, 8),
                                          ("8 workers", 8, 0)]:
            repo = run / f"repo-{threads}-{readahead}"
            engine.job(repo, "init")
            engine.threads = threads
            disk = {"name": "disk0", "path": url, "options": {"thumbprint": thumbprint, "readahead": readahead}}
            seconds = engine.job(repo, "backup", vm={"name": "bench vm"}, disks=[disk])["seconds"]
            figures[title] = round(seconds, 2)
            rows.append([title, f"{seconds:.2f}", f"{parse_size(args.size) / MiB / seconds:.0f}"])
    finally:
        shutil.rmtree(run, ignore_errors=True)
    print(f"\nVA Fleet full backup of the {args.size} image over HTTPS, {args.latency_ms:g} ms added per request")
    print(table(["engine", "seconds", "MB/s of disk"], rows))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4G", help="image size (multiple of 4M), e.g. 512M for a quick run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--percent", type=float, default=5.0)
    parser.add_argument("--mutate-seed", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", default=os.environ.get("VAFLEET_BENCH_DIR", "/var/tmp/vafleet-bench"),
                        help="local disk (not tmpfs) for the cached image, repositories and restores")
    parser.add_argument("--contenders", default="vafleet,restic,borg")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison (machines are noisy)")
    parser.add_argument("--json", help="save the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep repositories and the mutated image")
    parser.add_argument("--network", action="store_true", help="also measure the HTTPS source under latency")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--network-mib", type=int, default=256, help="MiB read for each --network figure")
    parser.add_argument("--skip-suite", action="store_true", help="only the --network figures")
    args = parser.parse_args()
    data: dict = {}
    if not args.skip_suite:
        data["rounds"] = []
        for number in range(1, args.rounds + 1):
            print(f"engine benchmark round {number}: {args.size} image, load average {load()}", flush=True)
            data["rounds"].append(run_suite(args, number - 1))
            print(report(data["rounds"][-1]), flush=True)
        if args.rounds > 1:
            data["median"] = median_of(data["rounds"])
            print(f"\nmedian of {args.rounds} rounds", flush=True)
            print(report(data["median"]), flush=True)
        if args.json:  # saved now too, so a failure in --network loses nothing
            Path(args.json).write_text(json.dumps(data, indent=2))
    if args.network:
        data["network"] = network_figures(args)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
