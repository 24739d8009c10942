from django.urls import path

from appliances import views

app_name = "appliances"

urlpatterns = [
    path("", views.fleet_list, name="list"),
    path("upgrade/", views.fleet_upgrade, name="upgrade"),
    path("health/", views.fleet_health, name="health"),
    path("add/", views.appliance_add, name="add"),
    path("placement/", views.appliance_placement, name="placement"),
    path("bulk/", views.bulk_deploy, name="bulk"),
    path("bulk/placement/", views.bulk_placement, name="bulk_placement"),
    path("operations/<int:pk>/", views.operation_detail, name="operation"),
    path("<int:pk>/", views.appliance_detail, name="detail"),
    path("<int:pk>/edit/", views.appliance_edit, name="edit"),
    path("<int:pk>/remove/", views.appliance_remove, name="remove"),
    path("<int:pk>/deploy/", views.appliance_deploy, name="deploy"),
    path("<int:pk>/redeploy/", views.appliance_redeploy, name="redeploy"),
    path("<int:pk>/check/", views.appliance_check, name="check"),
]
