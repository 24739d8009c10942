"""The engine bundle: the `engines` package plus a wheelhouse of its pinned dependencies, signed.

A bundle is a plain tar (`manifest.json`, `engines/...`, `wheels/*.whl`) and a small signed
descriptor (format, version, size, SHA-256, platform, unpacked size) sent as the installer's stdin.
The version is `engines.__version__ + "+" + content hash`, so any change to the engine's files or
to a dependency gives a new version. Wheels are repacked from the server's own installed
distributions (exactly the versions the tests ran, no network needed) and cached under
`<var>/bundle-cache/wheels/`; the appliance's platform must match the server's (checked on the VA).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata as md
import io
import json
import os
import platform
import re
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # not a direct requirement of the server; pip always vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

from appliances import REPO_DIR, var_dir
from appliances.keys import signing_key

FORMAT = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BundleError(RuntimeError):
    """The bundle could not be built; the message says what to do."""


@dataclass
class Bundle:
    path: Path
    descriptor_text: str
    signature: str

    @property
    def descriptor(self) -> dict:
        return json.loads(self.descriptor_text)

    @property
    def version(self) -> str:
        return self.descriptor["version"]

    @property
    def size(self) -> int:
        return self.descriptor["size"]

    def envelope(self) -> bytes:
        """What the VA-side installer reads on stdin: the descriptor text and its signature."""
        return json.dumps({"descriptor": self.descriptor_text, "signature": self.signature}).encode()


def _imports(package_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def engine_distributions(package_dir: Path) -> list[md.Distribution]:
    """The installed distributions the engine imports, with their dependencies (markers evaluated)."""
    owners = md.packages_distributions()
    todo = sorted({dist for name in _imports(package_dir) if name not in sys.stdlib_module_names
                   for dist in owners.get(name, [])})
    found: dict[str, md.Distribution] = {}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise BundleError(f"The engine needs {name!r}, which is not installed on the server: "
                              "install the requirements, then build the bundle again.") from exc
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [found[name] for name in sorted(found)]


def _zip_add(whl: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    whl.writestr(info, data, compresslevel=6)


def wheel_for(dist: md.Distribution) -> Path:
    """A wheel of an installed distribution, repacked from its RECORD once and cached."""
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    tag = tags[0] if tags else "py3-none-any"
    cache = var_dir() / "bundle-cache" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}-{dist.version}-{tag}.whl"
    if target.exists():
        return target
    info_dir = next((str(f).split("/")[0] for f in dist.files or [] if str(f).endswith(".dist-info/METADATA")), None)
    if info_dir is None:
        raise BundleError(f"{name} {dist.version} has no RECORD to repack: reinstall it with pip.")
    record = []
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    with zipfile.ZipFile(tmp, "w") as whl:
        for file in sorted(dist.files, key=str):
            rel = str(file)
            if rel.startswith("..") or rel.endswith(".pyc") or rel == f"{info_dir}/RECORD" \
                    or rel.startswith(f"{info_dir}/INSTALLER") or rel.startswith(f"{info_dir}/REQUESTED"):
                continue
            path = Path(dist.locate_file(file))
            if not path.is_file():
                continue
            data = path.read_bytes()
            _zip_add(whl, rel, data, 0o755 if os.access(path, os.X_OK) else 0o644)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
            record.append(f"{rel},sha256={digest},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        _zip_add(whl, f"{info_dir}/RECORD", ("\n".join(record) + "\n").encode())
    tmp.replace(target)
    return target


def _engine_files(package_dir: Path) -> list[Path]:
    return sorted(p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def _engines_version(package_dir: Path) -> str:
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)', (package_dir / "__init__.py").read_text(), re.M)
    if not match:
        raise BundleError(f"{package_dir}/__init__.py has no __version__: add one.")
    return match.group(1)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def build_bundle(package_dir: Path | None = None, out_dir: Path | None = None) -> Bundle:
    """Build (or reuse) the signed bundle of `package_dir` (default: the repository's `engines/`)."""
    package_dir = Path(package_dir or REPO_DIR / "engines")
    out_dir = Path(out_dir or var_dir() / "bundles")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"engines/{p.relative_to(package_dir)}": p.read_bytes() for p in _engine_files(package_dir)}
    wheels = {f"wheels/{w.name}": w for w in (wheel_for(d) for d in engine_distributions(package_dir))}
    content = hashlib.sha256()
    listing = {}
    for name, data in files.items():
        listing[name] = hashlib.sha256(data).hexdigest()
    for name, path in wheels.items():
        listing[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    for name in sorted(listing):
        content.update(f"{name}\0{listing[name]}\n".encode())
    version = f"{_engines_version(package_dir)}+{content.hexdigest()[:12]}"
    path = out_dir / f"engines-{version}.tar"
    sig_path = path.with_suffix(".sig.json")
    if path.exists() and sig_path.exists():
        saved = json.loads(sig_path.read_text())
        return Bundle(path, saved["descriptor"], saved["signature"])
    unpacked = sum(len(d) for d in files.values())
    for whl in wheels.values():
        with zipfile.ZipFile(whl) as z:
            unpacked += whl.stat().st_size + sum(i.file_size for i in z.infolist())  # wheel kept until unzipped
    manifest = {"version": version, "files": listing}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
        for name in sorted(files):
            _add(tar, name, files[name])
        for name in sorted(wheels):
            _add(tar, name, wheels[name].read_bytes())
    data = tmp.read_bytes()
    descriptor = {"format": FORMAT, "version": version, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                  "python": sys.implementation.cache_tag, "machine": platform.machine(), "unpacked_bytes": unpacked}
    descriptor_text = json.dumps(descriptor, sort_keys=True)
    signature = base64.b64encode(signing_key().sign(descriptor_text.encode())).decode()
    tmp.replace(path)
    sig_tmp = sig_path.with_name(f".{sig_path.name}.{os.getpid()}.{threading.get_ident()}")
    sig_tmp.write_text(json.dumps({"descriptor": descriptor_text, "signature": signature}))
    sig_tmp.replace(sig_path)
    _prune_old(out_dir, keep=3)
    return Bundle(path, descriptor_text, signature)


def _prune_old(out_dir: Path, keep: int) -> None:
    """Each engine change makes a new bundle; keep the newest few so the var dir does not grow."""
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # pruned meanwhile by a concurrent build
            return 0.0

    tars = sorted(out_dir.glob("engines-*.tar"), key=mtime, reverse=True)
    for old in tars[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sig.json").unlink(missing_ok=True)
