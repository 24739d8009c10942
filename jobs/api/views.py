"""Jobs API: backup repositories (CRUD plus a connection test run from an appliance)."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, ProtectedError, Q
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers as drf_serializers
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from appliances.actions import SENTENCE_ERRORS
from appliances.models import Appliance
from core import audit
from core.models import AuditEntry
from inventory.views.listing import count_of
from jobs import repositories
from jobs.api import serializers
from jobs.models import BackupJob, Repository, RestorePoint
from jobs.views.repositories import in_use


class RepositoryTestRequestSerializer(drf_serializers.Serializer):
    appliance = drf_serializers.IntegerField(required=False, help_text="Appliance to test from; default: the first "
                                                                       "ready one reached over SSH.")


@extend_schema_view(
    test=extend_schema(
        request=RepositoryTestRequestSerializer,
        responses={
            200: serializers.ProbeResultSerializer,
            400: OpenApiResponse(serializers.ErrorSerializer, description="No usable appliance, or bad settings."),
            502: OpenApiResponse(serializers.ErrorSerializer, description="The target refused or failed."),
        },
    ),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(serializers.ErrorSerializer, description="Still in use.")},
    ),
)
class RepositoryViewSet(viewsets.ModelViewSet):
    """Backup repositories. Viewers read, operators test, administrators change them."""

    serializer_class = serializers.RepositorySerializer
    filterset_fields = ("kind",)
    search_fields = ("name", "host", "path")
    ordering_fields = ("name", "kind", "host", "last_test", "free_bytes", "created")
    operator_actions = ("test",)

    def get_queryset(self):
        # The secrets are never read for display: lists work even if a secret cannot be decrypted.
        stored = ExpressionWrapper(~Q(password=""), output_field=BooleanField())
        return Repository.objects.defer("password", "passphrase").annotate(
            password_stored=stored, point_count=count_of(RestorePoint, "repository"))

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        repository = self.get_object()
        jobs = list(BackupJob.objects.filter(repository=repository).order_by("name").values_list("name", flat=True))
        refusal = in_use(repository.name, jobs, RestorePoint.objects.filter(repository=repository).count())
        if not refusal:
            try:
                repository.delete()
            except ProtectedError:
                refusal = f"Repository {repository.name} is still used by backup jobs or restore points."
            else:
                return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"detail": refusal, "code": "in_use"}, status=status.HTTP_409_CONFLICT)

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Probe the repository from an appliance: reach it, write a test file, free space, repository found."""
        repository = self.get_object()
        body = RepositoryTestRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        appliance = None
        if body.validated_data.get("appliance"):
            appliance = Appliance.objects.filter(pk=body.validated_data["appliance"]).first()
            if appliance is None:
                return Response({"detail": "There is no appliance with this id: choose one from /api/appliances/.",
                                 "code": "no_appliance"}, status=status.HTTP_400_BAD_REQUEST)
        try:
            result = repositories.test_repository(repository, appliance)
        except SENTENCE_ERRORS as exc:
            audit.record(AuditEntry.Action.OPERATION, repository, message="connection test: failed")
            return Response({"detail": repository.last_test_message or str(exc), "code": getattr(exc, "code", "error")},
                            status=getattr(exc, "http_status", status.HTTP_502_BAD_GATEWAY))
        audit.record(AuditEntry.Action.OPERATION, repository, message="connection test: ok")
        return Response({"appliance": result.appliance, "reachable": True, "writable": True,
                         "free_bytes": result.free_bytes, "initialized": result.initialized,
                         "format_version": result.format_version, "passphrase_ok": result.passphrase_ok,
                         "message": result.message})
