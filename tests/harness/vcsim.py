"""govmomi's vCenter simulator, built from Debian's Go sources and run on loopback.

The Go program in `vcsim/` shapes the inventory from flags and prints one JSON line when it
serves. It is built once per source version into `<var>/bin/vcsim-<hash>` (repeated runs reuse
it; a clean clone builds it, about 15 s) and always stopped afterwards: it also exits on its own
when the process that started it closes its standard input or dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import selectors
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "vcsim"
REPO_DIR = Path(__file__).resolve().parents[2]
GOPATH = "/usr/share/gocode"
INSTALL_HINT = "apt-get install golang-go golang-github-vmware-govmomi-dev"


class SimulatorUnavailable(RuntimeError):
    """The simulator cannot be built or started; the message says what to do."""


@dataclass(frozen=True)
class Shape:
    """The inventory to simulate; VMs are spread over every host and datastore of a datacenter."""

    datacenters: int = 1
    clusters: int = 1
    cluster_hosts: int = 3
    standalone_hosts: int = 1
    vms: int = 32  # per datacenter
    shared_datastores: int = 2
    local_datastores: bool = True
    standard_portgroups: int = 2
    distributed_portgroups: int = 2
    folders: int = 2
    listen: str = "127.0.0.1"  # 127.0.0.2 for certificate pinning (pyvmomi trusts 127.0.0.1 blindly)
    task_delay_ms: int = 0
    esx: bool = False  # a standalone ESXi (one host) instead of vCenter; cluster and switch counts are ignored
    method_delays_ms: tuple[tuple[str, int], ...] = ()  # e.g. (("RetrievePropertiesEx", 1500),)

    def args(self) -> list[str]:
        return [
            f"-dc={self.datacenters}", f"-clusters={self.clusters}", f"-cluster-hosts={self.cluster_hosts}",
            f"-standalone-hosts={self.standalone_hosts}", f"-vms={self.vms}", f"-shared-ds={self.shared_datastores}",
            f"-local-ds={'true' if self.local_datastores else 'false'}", f"-std-pg={self.standard_portgroups}",
            f"-dv-pg={self.distributed_portgroups}", f"-folders={self.folders}", f"-listen={self.listen}",
            f"-task-delay={self.task_delay_ms}", f"-esx={'true' if self.esx else 'false'}",
            f"-method-delay={','.join(f'{name}={ms}' for name, ms in self.method_delays_ms)}",
        ]

    @property
    def hosts(self) -> int:
        if self.esx:
            return 1
        return self.datacenters * (self.clusters * self.cluster_hosts + self.standalone_hosts)


@dataclass
class Simulator:
    url: str
    host: str
    port: int
    user: str
    password: str
    thumbprint: str
    vms: int
    hosts: int
    process: subprocess.Popen = field(repr=False)
    workdir: Path = field(repr=False)

    def connection_fields(self, **overrides) -> dict:
        """Fields for an inventory Connection (or ConnectionParams) that reach this simulator."""
        values = {
            "host": self.host, "port": self.port, "username": self.user, "password": self.password,
            "tls_thumbprint": self.thumbprint,
        }
        values.update(overrides)
        return values

    def write(self, vm: str, disk_key: int, start: int, length: int) -> str:
        """Record a guest write to a disk with change tracking; returns the disk's new change id."""
        context = ssl._create_unverified_context()  # our own simulator on loopback
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=10, context=context)
        try:
            payload = json.dumps({"vm": vm, "key": disk_key, "start": start, "length": length})
            conn.request("POST", "/vcsim/cbt/write", body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read().decode()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"the simulator refused the write ({response.status}): {text.strip()}")
        return json.loads(text)["change_id"]

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()  # the simulator exits when its stdin closes
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def bin_dir() -> Path:
    return Path(os.environ.get("VAFLEET_VCSIM_BIN_DIR") or REPO_DIR / "var" / "bin")


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build() -> Path:
    """The simulator binary for the current sources, building it if needed (safe across processes)."""
    target_dir = bin_dir()
    target = target_dir / f"vcsim-{source_hash()}"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise SimulatorUnavailable(f"Cannot build the vCenter simulator: Go or govmomi is missing ({INSTALL_HINT}).")
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(target_dir / ".vcsim-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build once
        if target.exists():
            return target
        env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off", "CGO_ENABLED": "0"}
        if not env.get("GOCACHE") and not env.get("HOME"):
            env["GOCACHE"] = str(target_dir.parent / "cache" / "go-build")
        partial = target.with_suffix(".partial")
        result = subprocess.run(
            [go, "build", "-o", str(partial), "."], cwd=SOURCE_DIR, env=env, capture_output=True, text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise SimulatorUnavailable(f"Building the vCenter simulator failed:\n{result.stderr.strip()}")
        partial.rename(target)
        for old in target_dir.glob("vcsim-*"):
            if old != target and not old.name.endswith(".lock"):
                old.unlink(missing_ok=True)
    return target


def start(shape: Shape | None = None, *, timeout: float = 120.0) -> Simulator:
    """Start a simulator with this inventory and wait until it serves."""
    shape = shape or Shape()
    binary = build()
    # Datastore folders live here and their paths become datastore morefs (max 80 characters): keep it short.
    workdir = Path(tempfile.mkdtemp(prefix="vcsim-", dir="/tmp" if os.path.isdir("/tmp") else None))
    stderr_path = workdir / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [str(binary), *shape.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "TMPDIR": str(workdir)}, cwd=workdir,
        )
    try:
        line = _first_line(process, timeout)
        info = json.loads(line)
    except Exception as exc:
        process.kill()
        process.wait(timeout=5)
        log = stderr_path.read_text(errors="replace")[-2000:]
        shutil.rmtree(workdir, ignore_errors=True)
        raise SimulatorUnavailable(f"The vCenter simulator did not start ({exc}). Its log:\n{log}") from exc
    return Simulator(
        url=info["url"], host=info["host"], port=info["port"], user=info["user"], password=info["password"],
        thumbprint=info["thumbprint"], vms=info["vms"], hosts=info["hosts"], process=process, workdir=workdir,
    )


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no ready line within {timeout:g} s")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"it exited with status {process.wait(timeout=5)}")
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


@contextmanager
def running(shape: Shape | None = None) -> Iterator[Simulator]:
    simulator = start(shape)
    try:
        yield simulator
    finally:
        simulator.stop()


def main() -> None:
    """Run a simulated vCenter until Ctrl-C, e.g. to add it as a connection in the portal."""
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(description="Run govmomi's vCenter simulator on loopback.")
    for spec in dataclasses.fields(Shape):
        flag = "--" + spec.name.replace("_", "-")
        if spec.type == "int":
            parser.add_argument(flag, type=int, default=spec.default)
        elif spec.type == "str":
            parser.add_argument(flag, default=spec.default)
        elif spec.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default)
    args = parser.parse_args()
    shape = Shape(**{k: v for k, v in vars(args).items() if k in Shape.__dataclass_fields__})
    with running(shape) as simulator:
        print(f"vCenter simulator at {simulator.host}:{simulator.port} ({simulator.hosts} hosts, {simulator.vms} VMs)")
        print(f"  user {simulator.user}  password {simulator.password}")
        print(f"  certificate SHA-256 thumbprint {simulator.thumbprint}")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            simulator.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
