from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from monitoring.api import prometheus

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/leads/", include("leads.pages.urls")),
    path("dashboard/", include("monitoring.dashboard.urls")),
    path("webhooks/", include("leads.webhooks.urls")),
    path("api/monitoring/", include("monitoring.api.urls")),
    path("metrics", prometheus.metrics, name="prometheus-metrics"),
    path("", RedirectView.as_view(pattern_name="dashboard:overview"), name="home"),
]
