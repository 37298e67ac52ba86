from django.urls import path

from leads.pages import views

app_name = "leads"

urlpatterns = [
    path("", views.lead_list, name="lead-list"),
    path("<int:lead_id>/", views.lead_detail, name="lead-detail"),
    path("<int:lead_id>/timeline", views.lead_timeline, name="lead-timeline"),
]
