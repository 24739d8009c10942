"""A Repository as the engine's target spec (what the appliance needs to reach it)."""

from __future__ import annotations

from jobs.models import Repository


def target_spec(repository: Repository) -> dict:
    """The job spec's `target` object; carries the target's password (the job spec travels over SSH only)."""
    options = dict(repository.options or {})
    if repository.kind == Repository.Kind.SMB and repository.share:
        options.setdefault("share", repository.share)
    return {
        "type": repository.kind,
        "path": repository.path,
        "host": repository.host,
        "port": repository.port or 0,
        "username": repository.username,
        "password": repository.password or "",
        "options": options,
    }
