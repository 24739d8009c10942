from django.urls import path

from inventory import views

app_name = "inventory"

urlpatterns = [
    path("connections/", views.connection_list, name="connection_list"),
    path("connections/add/", views.connection_add, name="connection_add"),
    path("connections/add/test/", views.connection_form_test, name="connection_form_test"),
    path("connections/<int:pk>/edit/test/", views.connection_form_test, name="connection_form_test"),
    path("connections/<int:pk>/", views.connection_detail, name="connection_detail"),
    path("connections/<int:pk>/edit/", views.connection_edit, name="connection_edit"),
    path("connections/<int:pk>/delete/", views.connection_delete, name="connection_delete"),
    path("connections/<int:pk>/test/", views.connection_test, name="connection_test"),
    path("connections/<int:pk>/trust/", views.connection_trust, name="connection_trust"),
    path("connections/<int:pk>/sync/", views.connection_sync, name="connection_sync"),
    path("connections/<int:pk>/status/", views.connection_status, name="connection_status"),
    path("hosts/", views.host_list, name="host_list"),
    path("hosts/<int:pk>/", views.host_detail, name="host_detail"),
    path("datastores/", views.datastore_list, name="datastore_list"),
    path("datastores/<int:pk>/", views.datastore_detail, name="datastore_detail"),
    path("networks/", views.network_list, name="network_list"),
    path("vms/", views.vm_list, name="vm_list"),
    path("vms/<int:pk>/", views.vm_detail, name="vm_detail"),
]
