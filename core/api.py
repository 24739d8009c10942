"""API helpers shared by every app: errors as sentences."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ActionableError


def exception_handler(exc, context):
    if isinstance(exc, ActionableError):
        return Response({"detail": str(exc), "code": exc.code}, status=exc.http_status)
    return drf_exception_handler(exc, context)
