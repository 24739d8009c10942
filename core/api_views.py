"""API for the signed-in user, API tokens and the audit log."""

from __future__ import annotations

import django_filters
from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, permissions, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from core.audit import Actor, acting_as
from core.middleware import client_address
from core.models import AuditEntry
from core.serializers import AuditEntrySerializer, MeSerializer, TokenRequestSerializer, TokenSerializer


class MeView(generics.RetrieveAPIView):
    """The signed-in user and their role (any signed-in user, even one without a role, may ask)."""

    serializer_class = MeSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_object(self):
        return self.request.user


class TokenThrottle(AnonRateThrottle):
    # Slows password guessing; generous enough for scripts.
    rate = "30/min"


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token (the same token on every call)."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [TokenThrottle]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: TokenSerializer, 400: OpenApiResponse(description="Wrong username or password.")},
    )
    def post(self, request: Request) -> Response:
        form = TokenRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        user = authenticate(request._request, **form.validated_data)
        if user is None or not user.is_active:
            return Response(
                {"detail": "Wrong username or password; check both and try again."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        # Nobody is signed in on this request: the token's owner is the one acting.
        with acting_as(Actor(user=user, remote_addr=client_address(request), via="api")):
            token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class AuditEntryFilterSet(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte", label="From (ISO 8601)")
    until = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt", label="Until (ISO 8601)")
    username = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = AuditEntry
        fields = ["user", "username", "action", "via", "object_type", "object_id", "remote_addr"]


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log: who changed what, when and from where. Never edited."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilterSet
    search_fields = ("username", "object_repr", "message", "object_type")
    ordering_fields = ("timestamp", "id", "username", "action", "object_type")
