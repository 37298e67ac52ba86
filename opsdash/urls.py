from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from monitoring.api import prometheus

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("leads.webhooks.urls")),
    path("api/monitoring/", include("monitoring.api.urls")),
    path("metrics", prometheus.metrics, name="prometheus-metrics"),
    path("", RedirectView.as_view(url="/admin/", permanent=False), name="home"),
]
