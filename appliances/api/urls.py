"""Appliance API routes, mounted at /api/appliances/."""

from rest_framework.routers import SimpleRouter

from appliances.api import views

app_name = "api-appliances"

router = SimpleRouter()
router.register("operations", views.FleetOperationViewSet, basename="operation")
router.register("", views.ApplianceViewSet, basename="appliance")

urlpatterns = router.urls
