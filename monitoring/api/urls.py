from django.urls import path

from monitoring.api import silences, stream, views

app_name = "monitoring-api"

urlpatterns = [
    path("health", views.health_overall, name="health"),
    path("health/live", views.health_live, name="health-live"),
    path("health/ready", views.health_ready, name="health-ready"),
    path("health/redis", views.health_redis, name="health-redis"),
    path("metrics/performance", views.performance, name="performance"),
    path("metrics/series", views.metric_series, name="metric-series"),
    path("switch", views.switch_state, name="switch"),
    path("alerts", views.alerts, name="alerts"),
    path("alerts/<int:alert_id>/ack", views.acknowledge, name="alert-ack"),
    path("silences", silences.silence_list, name="silences"),
    path("silences/<int:silence_id>/cancel", silences.silence_cancel, name="silence-cancel"),
    path("stream", stream.stream, name="stream"),
]
