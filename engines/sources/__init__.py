"""Source plugins: a registry from a short name to a Source class, imported on use so a
missing optional library fails only that source, with a clear error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any

from engines.errors import SourceError
from engines.sources.base import Source

REGISTRY: dict[str, str] = {
    "file": "engines.sources.file:FileSource",
    "device": "engines.sources.device:DeviceSource",
    "http": "engines.sources.http:HttpSource",
}


def open_source(kind: str, **options: Any) -> Source:
    """Open a source by registry name; `options` are the class's keyword arguments."""
    try:
        module_name, _, class_name = REGISTRY[kind].partition(":")
    except KeyError:
        raise SourceError(f"Unknown source type {kind!r}; known: {', '.join(REGISTRY)}.") from None
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise SourceError(f"The {kind} source cannot load: {exc}.") from exc
    return getattr(module, class_name)(**options)


def validate_extents(extents: Iterable[Any] | Mapping[str, Any], size: int) -> list[tuple[int, int]]:
    """Check a changed-block list against a disk of `size` bytes; return it sorted and merged.

    Accepts `[[offset, length], ...]`, `[{"offset"|"start": .., "length": ..}, ...]` or the
    `{"extents": [...]}` document that changed-block tracking exports.
    """
    if isinstance(extents, Mapping):
        extents = extents.get("extents", [])
    ranges: list[tuple[int, int]] = []
    for number, item in enumerate(extents, 1):
        try:
            if isinstance(item, Mapping):
                offset = item["offset"] if "offset" in item else item["start"]
                length = item["length"]
            else:
                offset, length = item
            offset, length = int(offset), int(length)
        except (KeyError, TypeError, ValueError):
            raise SourceError(
                f"Changed extent #{number} ({item!r}) is not an (offset, length) pair: "
                "send the changed-block list as [[offset, length], ...]."
            ) from None
        if offset < 0 or length < 0 or offset + length > size:
            raise SourceError(
                f"Changed extent #{number} (offset {offset}, length {length}) lies outside the disk of "
                f"{size} bytes: the changed-block list does not belong to this disk; "
                "run the backup without it (full read with deduplication)."
            )
        if length:
            ranges.append((offset, length))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for offset, length in ranges:
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            start = merged[-1][0]
            merged[-1] = (start, max(merged[-1][1], offset + length - start))
        else:
            merged.append((offset, length))
    return merged


__all__ = ["REGISTRY", "Source", "open_source", "validate_extents"]
