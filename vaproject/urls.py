from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("core.api_urls")),
    path("api/inventory/", include("inventory.api.urls")),
    path("api/appliances/", include("appliances.api.urls")),
    path("api/jobs/", include("jobs.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("inventory/", include("inventory.urls")),
    path("appliances/", include("appliances.urls")),
    path("jobs/", include("jobs.urls")),
    path("", include("core.urls")),
]
