from django.urls import path

from monitoring.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("fragments/<slug:name>", views.fragment, name="fragment"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/", views.alert_detail, name="alert-detail"),
    path("alerts/<int:alert_id>/acknowledge", views.acknowledge_alert, name="alert-acknowledge"),
    path("review/", views.review, name="review"),
    path("switch/", views.switch_history, name="switch-history"),
    path("switch/flip", views.flip_switch, name="switch-flip"),
    path("cache/flush", views.flush_cache, name="cache-flush"),
]
