"""API helpers shared by every app: errors as sentences."""

from rest_framework.views import exception_handler as drf_exception_handler

from inventory.connectors.base import ConnectorError


def exception_handler(exc, context):
    if isinstance(exc, ConnectorError):
        from rest_framework.response import Response

        return Response({"detail": str(exc), "code": exc.code}, status=502)
    return drf_exception_handler(exc, context)
