"""Sign-in throttling: after LOGIN_FAILURE_LIMIT failures for a user name (or from an address)
within the window, even the right password is refused, on the dashboard's login and the
admin's alike; the window moving on lifts it."""

from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from opsdash.models import LoginFailure
from tests.personas import viewer

pytestmark = pytest.mark.django_db


@pytest.fixture
def olivia():
    return viewer("olivia", password="right-password")


def sign_in(path: str, password: str, address: str = "203.0.113.7") -> bool:
    client = Client(REMOTE_ADDR=address)
    client.post(path, {"username": "olivia", "password": password})
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
@override_settings(LOGIN_FAILURE_LIMIT=5)
def test_it_refuses_even_the_right_password_after_too_many_failures(olivia, path):
    assert sign_in(path, "right-password") is True
    for _ in range(5):
        assert sign_in(path, "guess") is False

    assert sign_in(path, "right-password") is False
    assert sign_in(path, "right-password", address="198.51.100.9") is False  # per user name too
    assert LoginFailure.objects.filter(username="olivia").count() == 7


@override_settings(LOGIN_FAILURE_LIMIT=3)
def test_it_lets_the_right_password_in_once_the_window_has_moved_on(olivia):
    for _ in range(3):
        sign_in("/accounts/login/", "guess")
    assert sign_in("/accounts/login/", "right-password") is False

    LoginFailure.objects.update(at=timezone.now() - timedelta(hours=1))

    assert sign_in("/accounts/login/", "right-password") is True
