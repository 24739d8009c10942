"""Live progress latency: "Run now" in a real browser to the first progress update, and engine event to browser.

Run as root:  .venv/bin/python bench/live_progress_bench.py [--vms 30] [--disk-size 64M] [--json]

For each configuration, the whole system runs as real processes (tests/e2e/live.py: daphne and a qcluster
on a private var dir): the embedded default (SQLite, database channel layer, django-q2 ORM broker), then
the scale-out one (PostgreSQL, Redis channel layer and broker; ./scripts/scaleout-services.sh starts them
and a database and key prefix of the pass's own are removed after it). Each pass seeds a lab of `--vms`
VMs, deploys the built-in appliance, initialises a local-folder repository (so the run is an ordinary
one, not the first backup that creates it) and makes a job of every VM with a per-VM read limit
(`--throttle`), so the run lasts tens of seconds. Chromium (Playwright) logs in, opens the job's page and
clicks "Run now"; an init script wraps window.WebSocket so every message is stamped in the page on
arrival (performance.timeOrigin + now, the same clock as the engine's `engine_time`).
Prints per configuration: click to the run page's first update (a task's first event: its backup has
started) and to its first progress event (bytes read); the latency of every live task event (arrival -
engine_time, p50/p95/max, split at the event's stored time); message counts and the load average.
Targets: first update <= 2 s, p95 <= 1 s. Never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import load, table  # noqa: E402

OUT = ROOT / "bench" / "out" / "live_progress.json"
JOB_NAME = "Live progress bench"
PASSPHRASE = "Bench-Passphrase-3"
FIRST_UPDATE_TARGET, P95_TARGET = 2.0, 1.0  # seconds, from the spec
SCALEOUT = ("VAFLEET_DATABASE_URL", "VAFLEET_REDIS_URL")
LIMITS = ("VAFLEET_LIMIT_PER_HOST", "VAFLEET_LIMIT_PER_DATASTORE", "VAFLEET_LIMIT_PER_REPOSITORY")

# Stamps every websocket message on arrival, before the page's own handlers run, and the "Run now" submit.
RECORDER = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const live = window.__live = {messages: [], ended: false, loadedAt: null,
                                clickAt: Number(sessionStorage.getItem("bench-click-at")) || null};
  document.addEventListener("DOMContentLoaded", () => { live.loadedAt = now(); });
  document.addEventListener("submit", (event) => {
    if (/\\/run\\/?$/.test(event.target.action || "")) sessionStorage.setItem("bench-click-at", String(now()));
  }, true);
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const at = now();
        let message;
        try { message = JSON.parse(event.data); } catch (error) { return; }
        const data = message.data || {};
        live.messages.push({at: at, event: message.event, kind: data.kind || null, seq: data.seq || null,
                            engine_time: typeof data.engine_time === "number" ? data.engine_time * 1000 : null,
                            stored: message.event === "task.event" && data.time ? Date.parse(data.time) : null});
        if (message.event === "run.state" && data.active === false) live.ended = true;
      });
    }
  };
})();
"""

# Run by `manage.py shell -c` with the pass's settings; prints the job's id and its VM count as JSON.
MAKE_JOB = """
import json
from appliances.actions import engine_ready_transport
from appliances.models import Appliance
from inventory.models import Connection, VirtualMachine
from jobs.models import BackupJob, Repository
from jobs.repositories import ensure_initialized

options = json.loads({options!r})
Appliance.objects.filter(name="local-appliance").update(vcpus=options["parallel"])  # one slot per vCPU
appliance_vms = Appliance.objects.exclude(vm_moref="").values_list("vm_moref", flat=True)
vms = list(VirtualMachine.objects.filter(connection__name="Lab").exclude(moref__in=list(appliance_vms)))
repository = Repository.objects.create(name="Bench repository", kind="local", path=options["repository"],
                                       passphrase=options["passphrase"])
appliance = Appliance.objects.get(name="local-appliance")
with engine_ready_transport(appliance) as transport:  # a run into an existing repository, as usual
    ensure_initialized(repository, transport, appliance)
job = BackupJob.objects.create(name=options["name"], repository=repository, max_parallel=options["parallel"],
                               throttle_mbps=options["throttle"], keep_last=0, keep_daily=0, keep_weekly=0,
                               keep_monthly=0)
job.vms.set(vms)
print(json.dumps({{"job": job.pk, "vms": len(vms)}}))
"""

RUN_STATES = """
import json
from jobs.models import JobRun
run = JobRun.objects.get(job__name={name!r})
print(json.dumps({{"state": run.state, "tasks": run.tasks.count(),
                  "failed": list(run.tasks.exclude(state="succeeded").values_list("vm_name", "message")[:3])}}))
"""


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def spread(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": percentile(values, 0.50), "p95": percentile(values, 0.95), "max": max(values)}


def scaleout_urls() -> dict[str, str]:
    """Starts PostgreSQL and Redis (idempotent); their URLs as the script prints them."""
    result = subprocess.run([str(ROOT / "scripts" / "scaleout-services.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/scaleout-services.sh failed:\n{result.stderr[-2000:]}")
    urls = dict(re.findall(r"^(VAFLEET_\w+)=(\S+)$", result.stdout, re.M))
    missing = [name for name in SCALEOUT if name not in urls]
    if missing:
        raise RuntimeError(f"scripts/scaleout-services.sh printed no {', '.join(missing)}:\n{result.stdout}")
    return urls


def prepare(system, args) -> dict:
    """The lab, the built-in appliance and the job of every VM; returns {"job": id, "vms": n}."""
    root = system.var_dir / "lab"
    started = time.perf_counter()
    system.manage("lab", "seed", "--root", str(root), "--vms", str(args.vms), "--disk-size", args.disk_size,
                  "--fill", str(args.fill))
    system.manage("fleet", "local", "--connection", "Lab")
    options = {"parallel": args.parallel, "throttle": args.throttle, "name": JOB_NAME,
               "repository": str(system.var_dir / "repository"), "passphrase": PASSPHRASE}
    made = json.loads(system.manage("shell", "-c", MAKE_JOB.format(options=json.dumps(options))).splitlines()[-1])
    made["setup_seconds"] = time.perf_counter() - started
    return made


def measure(system, browser, job_id: int, timeout: float) -> dict:
    """Clicks "Run now" on the job's page and records every message the run page receives until the run ends."""
    from playwright.sync_api import expect

    from tests.e2e.conftest import log_in

    context = browser.new_context(base_url=system.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    context.add_init_script(RECORDER)
    try:
        page = context.new_page()
        log_in(page)
        page.goto(f"/jobs/{job_id}/")
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r"/runs/\d+/?$"))
        expect(page.locator("[data-run-live]")).to_be_attached()
        page.wait_for_function("window.__live.ended", polling=500, timeout=timeout * 1000)
        return page.evaluate("window.__live")
    finally:
        context.close()


def summarize(live: dict) -> dict:
    messages, click = live["messages"], live["clickAt"]
    if click is None:
        raise RuntimeError("The run page has no click time: the \"Run now\" form's submit was not seen.")
    events = [m for m in messages if m["event"] == "task.event"]
    timed = [m for m in events if m["engine_time"] is not None]
    first_event = next((m["at"] for m in events), None)
    first_progress = next((m["at"] for m in events if m["kind"] == "progress"), None)
    return {
        "messages": len(messages), "task_events": len(events), "timed_events": len(timed),
        "progress_events": sum(m["kind"] == "progress" for m in timed),
        "page_loaded": (live["loadedAt"] - click) / 1000,
        "first_event": (first_event - click) / 1000 if first_event else None,
        "first_progress": (first_progress - click) / 1000 if first_progress else None,
        "latency": spread([(m["at"] - m["engine_time"]) / 1000 for m in timed]),
        "engine_to_stored": spread([(m["stored"] - m["engine_time"]) / 1000 for m in timed if m["stored"]]),
        "stored_to_browser": spread([(m["at"] - m["stored"]) / 1000 for m in timed if m["stored"]]),
        "run_seconds": (messages[-1]["at"] - click) / 1000 if messages else None,
    }


def one_pass(configuration: str, browser, args, env: dict[str, str]) -> dict:
    from tests.e2e.live import running_system

    saved = {name: os.environ.get(name) for name in (*SCALEOUT, *env)}
    for name in SCALEOUT:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        with running_system() as system:
            if system.configuration != configuration:
                raise RuntimeError(f"The system started {system.configuration}, not {configuration}.")
            made = prepare(system, args)
            load_before = load()
            live = measure(system, browser, made["job"], args.timeout)
            load_after = load()
            run = json.loads(system.manage("shell", "-c", RUN_STATES.format(name=JOB_NAME)).splitlines()[-1])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"configuration": configuration, "vms": made["vms"], "setup_seconds": made["setup_seconds"],
            "run_state": run["state"], "failed": run["failed"], "load_before": load_before,
            "load_after": load_after, **summarize(live)}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def report(results: list[dict]) -> None:
    rows = [[r["configuration"], ms(r["first_event"]), ms(r["first_progress"]), ms(r["latency"]["p50"]),
             ms(r["latency"]["p95"]), ms(r["latency"]["max"]), str(r["timed_events"]), str(r["messages"]),
             f"{r['run_seconds']:.1f} s", r["load_after"]] for r in results]
    print()
    print(table(["configuration", "click to first update", "to first progress event", "p50", "p95", "max",
                 "events timed", "messages", "run", "load 1/5/15 after"], rows))
    print()
    for r in results:
        split_50, split_95 = r["engine_to_stored"], r["stored_to_browser"]
        first_ok = r["first_event"] is not None and r["first_event"] <= FIRST_UPDATE_TARGET
        p95_ok = r["latency"]["p95"] is not None and r["latency"]["p95"] <= P95_TARGET
        print(f"{r['configuration']}: {r['vms']} VMs, run {r['run_state']}; after the click: run page loaded "
              f"{ms(r['page_loaded'])}, first update (a task's first event) {ms(r['first_event'])} (target "
              f"{FIRST_UPDATE_TARGET:g} s: {'met' if first_ok else 'missed'}), first progress event "
              f"{ms(r['first_progress'])}; engine event to browser p95 {ms(r['latency']['p95'])} (target "
              f"{P95_TARGET:g} s: {'met' if p95_ok else 'missed'}) over {r['timed_events']} events "
              f"({r['progress_events']} progress)")
        print(f"  engine -> stored p50/p95 {ms(split_50['p50'])}/{ms(split_50['p95'])}, stored -> browser "
              f"{ms(split_95['p50'])}/{ms(split_95['p95'])}; load {r['load_before']} before the click, "
              f"{r['load_after']} after the run")
        if r["failed"]:
            print(f"  not succeeded: {r['failed']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=30, help="lab VMs in the job (default 30)")
    parser.add_argument("--disk-size", default="64M", help="capacity of every lab disk (default 64M)")
    parser.add_argument("--fill", type=float, default=0.25, help="written share of every disk (default 0.25)")
    parser.add_argument("--throttle", type=int, default=5, help="read limit per VM in MB/s (default 5)")
    parser.add_argument("--parallel", type=int, default=10, help="VMs backed up at once (default 10)")
    parser.add_argument("--configurations", default="embedded,scale-out",
                        help="which to run, comma-separated (default embedded,scale-out)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one run may take (default 300)")
    parser.add_argument("--json", action="store_true", help=f"also write {OUT.relative_to(ROOT)}")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.configurations.split(",") if c.strip()]
    unknown = sorted(set(chosen) - {"embedded", "scale-out"})
    if unknown or not chosen:
        print(f"--configurations takes embedded and/or scale-out, not {', '.join(unknown) or 'nothing'}.",
              file=sys.stderr)
        return 2
    if args.vms < 1 or args.parallel < 1 or args.throttle < 1:
        print("--vms, --parallel and --throttle must be at least 1.", file=sys.stderr)
        return 2
    if os.geteuid() != 0 and "scale-out" in chosen:
        print("The scale-out pass needs root (it starts PostgreSQL and Redis); run as root or pass "
              "--configurations embedded.", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.e2e.live import ServerFailed

    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 2
    # The dispatcher's per-host, per-datastore and per-repository limits would hold the run below --parallel.
    limits = {name: str(args.parallel) for name in LIMITS}
    print(f"{args.vms} VMs x {args.disk_size} ({args.fill:.0%} written), {args.throttle} MB/s per VM, "
          f"{args.parallel} at once; {os.cpu_count()} cores, load {load()}")
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for configuration in chosen:
                env = {**limits, **(scaleout_urls() if configuration == "scale-out" else {})}
                started = time.perf_counter()
                try:
                    results.append(one_pass(configuration, browser, args, env))
                except (ServerFailed, RuntimeError) as exc:
                    print(f"The {configuration} pass failed: {exc}", file=sys.stderr)
                    return 1
                print(f"{configuration}: pass done in {time.perf_counter() - started:.0f} s "
                      f"(setup {results[-1]['setup_seconds']:.1f} s)")
        finally:
            browser.close()
    report(results)
    if args.json:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"taken": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cores": os.cpu_count(),
                                   "options": vars(args), "results": results}, indent=2))
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0 if all(r["run_state"] == "succeeded" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
