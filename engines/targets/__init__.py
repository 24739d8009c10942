"""Target plugins: a registry from a short name to a Target class, imported on use so a
missing optional library fails only that target, with a clear error."""

from __future__ import annotations

from importlib import import_module

from engines.errors import TargetError
from engines.targets.base import Entry, Target, TargetSpec

REGISTRY: dict[str, str] = {
    "local": "engines.targets.local:LocalTarget",
    "sftp": "engines.targets.sftp:SftpTarget",
    "ftp": "engines.targets.ftp:FtpTarget",
    "ftps": "engines.targets.ftp:FtpTarget",
    "smb": "engines.targets.smb:SmbTarget",
    "nfs": "engines.targets.nfs:NfsTarget",
}


def open_target(spec: TargetSpec) -> Target:
    try:
        module_name, _, class_name = REGISTRY[spec.type].partition(":")
    except KeyError:
        raise TargetError(f"Unknown target type {spec.type!r}; known: {', '.join(REGISTRY)}.") from None
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"The {spec.type} target cannot load: {exc}.") from exc
    return getattr(module, class_name)(spec)


__all__ = ["REGISTRY", "Entry", "Target", "TargetSpec", "open_target"]
