"""Core API routes, mounted at /api/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from core import api_views

router = SimpleRouter()
router.register("audit", api_views.AuditEntryViewSet, basename="audit")

urlpatterns = [
    path("me/", api_views.MeView.as_view(), name="api-me"),
    path("token/", api_views.ObtainTokenView.as_view(), name="api-token"),
    *router.urls,
]
