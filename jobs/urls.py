from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("repositories/", views.repository_list, name="repository_list"),
    path("repositories/add/", views.repository_add, name="repository_add"),
    path("repositories/<int:pk>/", views.repository_detail, name="repository_detail"),
    path("repositories/<int:pk>/edit/", views.repository_edit, name="repository_edit"),
    path("repositories/<int:pk>/delete/", views.repository_delete, name="repository_delete"),
    path("repositories/<int:pk>/test/", views.repository_test, name="repository_test"),
]
