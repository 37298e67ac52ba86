"""The cache switch in the admin: flipped through the switch service with a reason, never
while pinned by the environment, never added or deleted, and never without the flip
permission."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.test import override_settings
from django.urls import reverse

from monitoring.cache import switch
from monitoring.models import CacheSwitch, SwitchAudit
from tests.leads.admin_support import UNREACHABLE_REDIS
from tests.personas import staff

# --- the cache switch -----------------------------------------------------------------------


def switch_change_url() -> str:
    switch.read_state()  # first boot creates the row
    return reverse("admin:monitoring_cacheswitch_change", args=[CacheSwitch.SINGLETON_ID])


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_turns_caching_off_through_the_service(admin_client, admin_user):
    response = admin_client.post(switch_change_url(), {"reason": "incident 7"})
    assert response.status_code == 302
    audit = SwitchAudit.objects.get()
    assert (
        audit.actor,
        audit.action,
        audit.source,
        audit.reason,
        audit.old_enabled,
        audit.new_enabled,
        audit.generation,
    ) == (admin_user.username, "disable", "admin", "incident 7", True, False, 1)
    row = CacheSwitch.objects.get()
    assert (row.enabled, row.changed_by, row.reason) == (False, admin_user.username, "incident 7")


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_turns_caching_back_on_with_a_new_generation(admin_client):
    url = switch_change_url()
    admin_client.post(url, {"reason": "incident 7"})
    response = admin_client.post(url, {"enabled": "on", "reason": "resolved"})
    assert response.status_code == 302
    assert list(
        SwitchAudit.objects.order_by("id").values_list("action", "source", "generation")
    ) == [("disable", "admin", 1), ("enable", "admin", 2)]
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None)
def test_it_requires_a_reason_to_flip_the_switch(admin_client):
    response = admin_client.post(switch_change_url(), {"reason": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"reason": ["This field is required."]}
    assert SwitchAudit.objects.count() == 0
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
@override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=False)
def test_it_does_not_flip_a_switch_pinned_by_the_environment(admin_client):
    response = admin_client.post(switch_change_url(), {"reason": "try"})
    assert response.status_code == 200  # the form again, with the reason it was refused
    assert response.context["adminform"].form.non_field_errors() == [
        "The switch cannot be flipped: caching is pinned off by the environment "
        "(REDIS_ENABLED=false)."
    ]
    assert list(get_messages(response.wsgi_request)) == []
    assert LogEntry.objects.count() == 0
    assert SwitchAudit.objects.count() == 0
    assert CacheSwitch.objects.get().enabled is True


@pytest.mark.django_db
def test_it_cannot_add_or_delete_the_switch(admin_client):
    url = switch_change_url()
    assert admin_client.get(reverse("admin:monitoring_cacheswitch_add")).status_code == 403
    delete_url = reverse("admin:monitoring_cacheswitch_delete", args=[CacheSwitch.SINGLETON_ID])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client.get(url).status_code == 200
    assert CacheSwitch.objects.count() == 1


@pytest.mark.django_db
def test_it_lets_no_one_flip_the_switch_in_the_admin_without_the_flip_permission(client):
    editor = staff(
        "eve", permissions=("monitoring.change_cacheswitch", "monitoring.view_cacheswitch")
    )
    client.force_login(editor)
    url = switch_change_url()
    before = CacheSwitch.objects.get().enabled

    response = client.post(url, {"enabled": "" if before else "on", "reason": "try it"})

    assert response.status_code == 403
    assert CacheSwitch.objects.get().enabled is before
    assert not SwitchAudit.objects.exists()
