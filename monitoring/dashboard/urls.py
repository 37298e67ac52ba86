from django.urls import path

from monitoring.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("fragments/<slug:name>", views.fragment, name="fragment"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/", views.alert_detail, name="alert-detail"),
    path("alerts/<int:alert_id>/acknowledge", views.acknowledge_alert, name="alert-acknowledge"),
    path("switch/", views.switch_history, name="switch-history"),
    path("switch/flip", views.flip_switch, name="switch-flip"),
    path("cache/flush", views.flush_cache, name="cache-flush"),
    path("silences/", views.silence_list, name="silences"),
    path("silences/add", views.add_silence, name="silence-add"),
    path("silences/<int:silence_id>/cancel", views.cancel_silence, name="silence-cancel"),
]
