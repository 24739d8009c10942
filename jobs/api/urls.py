"""Jobs API routes, mounted at /api/jobs/."""

from rest_framework.routers import DefaultRouter

from jobs.api import views

app_name = "api-jobs"

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet, basename="repository")

urlpatterns = [*router.urls]
