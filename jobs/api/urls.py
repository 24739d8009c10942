"""Jobs API routes, mounted at /api/jobs/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from jobs.api import views

app_name = "api-jobs"

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet, basename="repository")
router.register("jobs", views.BackupJobViewSet, basename="job")
router.register("runs", views.JobRunViewSet, basename="run")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("restore-points", views.RestorePointViewSet, basename="restore-point")

urlpatterns = [
    path("notifications/me/", views.MyNotificationSettingsView.as_view(), name="my-notification-settings"),
    *router.urls,
]
