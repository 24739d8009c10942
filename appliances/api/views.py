"""Appliance API: configuration CRUD (administrators), fleet actions (operators), operations (everyone).

Actions queue a FleetOperation and answer 202 with it; its progress is at /api/appliances/operations/{id}/.
"""

from __future__ import annotations

from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers as drf_serializers
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from appliances import bulk, services
from appliances.api import serializers
from appliances.models import Appliance, FleetOperation
from core.errors import ActionableError
from inventory.models import Host, VirtualMachine

QUEUED = OpenApiResponse(serializers.FleetOperationSerializer, description="The operation was queued.")
REFUSED = OpenApiResponse(serializers.RefusalSerializer, description="Refused, with the sentence that says why.")


def queued(operation: FleetOperation) -> Response:
    return Response(serializers.FleetOperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


def refused(exc: ActionableError, code: int = status.HTTP_409_CONFLICT) -> Response:
    return Response({"detail": str(exc), "code": exc.code}, status=code)


@extend_schema_view(
    destroy=extend_schema(
        summary="Undeploy and delete the appliance",
        responses={202: QUEUED, 204: OpenApiResponse(description="A draft: deleted at once."),
                   409: OpenApiResponse(serializers.RefusalSerializer, description="It still has work.")},
    ),
    deploy=extend_schema(request=None, responses={202: QUEUED, 409: REFUSED}),
    redeploy=extend_schema(request=None, responses={202: QUEUED, 409: REFUSED}),
    check=extend_schema(request=None, responses={202: QUEUED, 409: REFUSED}),
    bulk=extend_schema(
        request=serializers.BulkDeploySerializer,
        responses={202: QUEUED, 400: OpenApiResponse(serializers.BulkProblemsSerializer,
                                                     description="Nothing was created: what is wrong, by host.")},
    ),
    upgrade=extend_schema(request=serializers.UpgradeSerializer, responses={202: QUEUED, 409: REFUSED}),
    protection=extend_schema(
        summary="Which ready appliances can protect a VM, and how",
        parameters=[OpenApiParameter("vm", int, required=True, description="The VM's id.")],
        responses={200: serializers.ProtectionOptionSerializer(many=True)},
    ),
)
class ApplianceViewSet(viewsets.ModelViewSet):
    """Appliances. Viewers read, operators deploy, redeploy, check and upgrade, administrators configure them."""

    serializer_class = serializers.ApplianceSerializer
    filterset_fields = ("state", "connection", "host", "addressing")
    search_fields = ("name", "hostname", "address")
    ordering_fields = ("name", "state", "address", "engine_version", "last_seen", "created")
    operator_actions = ("deploy", "redeploy", "check", "upgrade")
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Appliance.objects.defer(*serializers.PASSWORD_FIELDS).select_related("host").prefetch_related(
            Prefetch("served_hosts", queryset=Host.objects.only("id"))
        )

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        try:
            operation = services.start_remove(self.get_object(), user=request.user)
        except ActionableError as exc:  # ApplianceBusy: it still has work, nothing was removed
            return refused(exc)
        return queued(operation) if operation is not None else Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"])
    def deploy(self, request: Request, pk: str | None = None) -> Response:
        """Deploy a draft (or a failed deployment) of this appliance."""
        return self._start(lambda: services.start_deploy([self.get_object()], user=request.user))

    @action(detail=True, methods=["post"])
    def redeploy(self, request: Request, pk: str | None = None) -> Response:
        """Remove the appliance VM and deploy it again with the same configuration."""
        return self._start(lambda: services.start_redeploy(self.get_object(), user=request.user))

    @action(detail=True, methods=["post"])
    def check(self, request: Request, pk: str | None = None) -> Response:
        """Check this appliance's health now."""
        return self._start(lambda: services.start_health_round(user=request.user, appliances=[self.get_object()]))

    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        """Create one appliance per host and deploy them all; if one is wrong, none is created."""
        body = serializers.BulkDeploySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        hosts = values.pop("hosts")
        choices = bulk.BulkChoices(**values)
        planned = bulk.plan(hosts, choices)
        wrong = bulk.check(planned, choices)
        if wrong:
            detail = f"Nothing was created: {len(wrong)} of {len(planned)} planned appliances have problems."
            return Response({"detail": detail, "problems": wrong}, status=status.HTTP_400_BAD_REQUEST)
        appliances = bulk.create(planned)
        return self._start(lambda: services.start_deploy(appliances, user=request.user))

    @action(detail=False, methods=["post"])
    def upgrade(self, request: Request) -> Response:
        """Bring every deployed appliance (or those listed) to the current engine."""
        body = serializers.UpgradeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        chosen = body.validated_data.get("appliances") or None
        return self._start(lambda: services.start_upgrade(chosen, user=request.user))

    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def protection(self, request: Request) -> Response:
        vm_id = request.query_params.get("vm", "")
        if not vm_id.isdigit():
            raise drf_serializers.ValidationError({"vm": ["Give the VM's id, e.g. ?vm=12."]})
        vm = get_object_or_404(VirtualMachine.objects.select_related("host"), pk=vm_id)
        options = services.protection_for_vm(vm)
        return Response(serializers.ProtectionOptionSerializer(options, many=True).data)

    def _start(self, start) -> Response:
        try:
            return queued(start())
        except ActionableError as exc:
            return refused(exc)


class FleetOperationViewSet(viewsets.ReadOnlyModelViewSet):
    """Fleet operations (deploy, redeploy, remove, upgrade, health), newest first, with their items."""

    filterset_fields = ("kind", "state")
    ordering_fields = ("created", "finished")

    def get_queryset(self):
        operations = FleetOperation.objects.select_related("created_by")
        if self.action == "retrieve":
            operations = operations.prefetch_related("items")
        return operations

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.FleetOperationDetailSerializer
        return serializers.FleetOperationSerializer
