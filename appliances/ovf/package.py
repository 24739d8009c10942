"""The appliance's OVF package on disk: descriptor, disk image and SHA-256 manifest.

`build_package()` writes `<var>/ovf/va-fleet-appliance-<version>/` once; the version carries a
hash of the content (descriptor, disk image and first-boot script), so a change gives a new
directory and an unchanged package is reused. Written into a temporary directory and renamed,
so a reader never sees half a package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliances import var_dir
from appliances.ovf.descriptor import DiskFile, build_descriptor
from appliances.ovf.disk import stream_optimized_vmdk

BASE_NAME = "va-fleet-appliance"
DISK_CAPACITY_GIB = 8
FIRSTBOOT = Path(__file__).resolve().parent / "firstboot.sh"


def base_version() -> str:
    from engines import __version__

    return __version__


@dataclass(frozen=True)
class OvfPackage:
    version: str
    directory: Path
    ovf: Path
    disk: Path
    manifest: Path

    @property
    def descriptor(self) -> str:
        return self.ovf.read_text()

    def files(self) -> dict[str, Path]:
        """The files the descriptor references, by href (what an import uploads)."""
        return {self.disk.name: self.disk}


def _contents() -> tuple[str, dict[str, bytes]]:
    disk_name_stub = f"{BASE_NAME}-disk1.vmdk"
    disk = stream_optimized_vmdk(DISK_CAPACITY_GIB << 30, disk_name_stub)
    probe = build_descriptor(base_version(), DiskFile(disk_name_stub, len(disk), DISK_CAPACITY_GIB))
    digest = hashlib.sha256()
    for part in (probe.encode(), disk, FIRSTBOOT.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    version = f"{base_version()}-{digest.hexdigest()[:12]}"
    stem = f"{BASE_NAME}-{version}"
    disk_name = f"{stem}-disk1.vmdk"
    descriptor = build_descriptor(version, DiskFile(disk_name, len(disk), DISK_CAPACITY_GIB))
    files = {f"{stem}.ovf": descriptor.encode(), disk_name: disk}
    manifest = "".join(f"SHA256({name})= {hashlib.sha256(data).hexdigest()}\n" for name, data in files.items())
    files[f"{stem}.mf"] = manifest.encode()
    return version, files


def _package(directory: Path, version: str) -> OvfPackage:
    stem = f"{BASE_NAME}-{version}"
    return OvfPackage(version=version, directory=directory, ovf=directory / f"{stem}.ovf",
                      disk=directory / f"{stem}-disk1.vmdk", manifest=directory / f"{stem}.mf")


def build_package(out_dir: Path | None = None) -> OvfPackage:
    """The package for the current sources, written under `out_dir` (default `<var>/ovf`) if missing."""
    version, files = _contents()
    parent = Path(out_dir) if out_dir is not None else var_dir() / "ovf"
    parent.mkdir(parents=True, exist_ok=True)
    directory = parent / f"{BASE_NAME}-{version}"
    if all((directory / n).is_file() and (directory / n).read_bytes() == data for n, data in files.items()):
        return _package(directory, version)
    staging = Path(tempfile.mkdtemp(prefix=f".{BASE_NAME}-", dir=parent))
    try:
        for name, data in files.items():
            with open(staging / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if directory.exists():
            shutil.rmtree(directory)  # damaged copy of this version
        try:
            staging.rename(directory)
        except OSError:
            if not directory.is_dir():  # another process did not win the race either
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _package(directory, version)


def verify_manifest(package: OvfPackage) -> list[str]:
    """Names of the files whose SHA-256 does not match the manifest (empty when intact)."""
    bad = []
    for line in package.manifest.read_text().splitlines():
        name, _, digest = line.partition(")= ")
        name = name.removeprefix("SHA256(")
        path = package.directory / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest.strip():
            bad.append(name)
    return bad
