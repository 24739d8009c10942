"""Inventory API routes, mounted at /api/inventory/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from inventory.api import views

app_name = "api-inventory"

router = DefaultRouter()
router.register("connections", views.ConnectionViewSet, basename="connection")
router.register("datacenters", views.DatacenterViewSet, basename="datacenter")
router.register("clusters", views.ClusterViewSet, basename="cluster")
router.register("hosts", views.HostViewSet, basename="host")
router.register("datastores", views.DatastoreViewSet, basename="datastore")
router.register("networks", views.NetworkViewSet, basename="network")
router.register("vms", views.VirtualMachineViewSet, basename="vm")

urlpatterns = [path("summary/", views.SummaryView.as_view(), name="summary"), *router.urls]
