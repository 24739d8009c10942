"""Engine errors: each carries a stable code and a sentence an operator can act on."""

from __future__ import annotations


class EngineError(Exception):
    code = "engine_error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class TargetError(EngineError):
    code = "target_error"


class TargetUnreachable(TargetError):
    code = "target_unreachable"


class TargetAuthFailed(TargetError):
    code = "target_auth_failed"


class TargetFull(TargetError):
    code = "target_full"


class TargetNotFound(TargetError):
    code = "target_not_found"


class TargetPermissionDenied(TargetError):
    code = "target_permission_denied"


class SourceError(EngineError):
    code = "source_error"


class SourceUnreachable(SourceError):
    code = "source_unreachable"


class SourceAuthFailed(SourceError):
    code = "source_auth_failed"


class SourceNotFound(SourceError):
    code = "source_not_found"


class RestoreError(EngineError):
    code = "restore_error"


class DigestMismatch(RestoreError):
    code = "digest_mismatch"
