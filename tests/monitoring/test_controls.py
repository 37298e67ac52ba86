"""The one switch service: permission (for a user), reason and environment pin checked the
same for every caller, and each change audited with its actor and source."""

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings

from monitoring.cache import controls, switch
from monitoring.models import SwitchAudit
from tests.personas import flipper, viewer

pytestmark = pytest.mark.django_db(transaction=True)
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def runtime_switch():
    with override_settings(REDIS_URL=UNREACHABLE_REDIS, REDIS_ENABLED=None):
        yield


def test_it_flips_and_flushes_for_a_user_with_the_permission_audited_with_them():
    olivia = flipper("olivia")

    controls.flip(False, user=olivia, reason="incident 7", source="dashboard")
    controls.flush(user=olivia, reason="after the fix", source="admin")

    rows = list(SwitchAudit.objects.order_by("id").values_list("actor", "action", "source"))
    assert rows == [("olivia", "disable", "dashboard"), ("olivia", "flush", "admin")]


@pytest.mark.parametrize("change", ["flip", "flush"])
def test_it_refuses_a_user_without_the_permission(change):
    victor = viewer("victor")
    with pytest.raises(PermissionDenied):
        if change == "flip":
            controls.flip(False, user=victor, reason="try", source="dashboard")
        else:
            controls.flush(user=victor, reason="try", source="dashboard")
    assert not SwitchAudit.objects.exists()


@pytest.mark.parametrize("change", ["flip", "flush"])
def test_it_refuses_without_a_reason_and_while_pinned(change):
    def attempt(reason):
        if change == "flip":
            return controls.flip(True, actor="ops (cli)", reason=reason, source="cli")
        return controls.flush(actor="ops (cli)", reason=reason, source="cli")

    with pytest.raises(controls.Refused, match="reason is required"):
        attempt("  ")
    with override_settings(REDIS_ENABLED=False), pytest.raises(controls.Refused, match="pinned"):
        attempt("incident")
    assert not SwitchAudit.objects.exists()


def test_it_labels_the_switch_once_for_every_page_and_command():
    state = switch.read_state()
    assert controls.state_label(state) == "caching on"
    with override_settings(REDIS_ENABLED=False):
        assert controls.state_label(switch.read_state()) == "caching pinned off"
    assert controls.SOURCE_LABELS[state.source] == "runtime switch"
