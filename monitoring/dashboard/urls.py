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
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/<int:incident_id>/", views.incident_detail, name="incident-detail"),
    path("incidents/<int:incident_id>/notes", views.add_incident_note, name="incident-note"),
    path("runbook/", views.runbook_page, name="runbook"),
    path("silences/", views.silence_list, name="silences"),
    path("silences/add", views.add_silence, name="silence-add"),
    path("silences/<int:silence_id>/cancel", views.cancel_silence, name="silence-cancel"),
]
