"""The people the tests act as, with the access production gives them
(monitoring.dashboard.access): staff see the dashboard and the monitoring API; staff who also
hold the switch's flip permission may flip it and flush the cache; anyone else is refused.

Nobody gets a password unless a test signs in through a form with it: hashing one costs a test
about half a second."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from monitoring.cache.controls import FLIP_PERMISSION


def permission(name: str) -> Permission:
    """`name` as Django spells it in has_perm: "app_label.codename"."""
    app_label, codename = name.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff(username: str = "sam", *, permissions: tuple[str, ...] = (), password=None):
    """A staff user holding `permissions` ("app_label.codename")."""
    user = get_user_model().objects.create_user(username, password=password, is_staff=True)
    if not permissions:
        return user
    user.user_permissions.add(*(permission(name) for name in permissions))
    return get_user_model().objects.get(pk=user.pk)  # no permission cache from before the grant


def viewer(username: str = "sam", *, password=None):
    """Sam is on the support desk: staff, may look at the dashboard, may not flip the switch."""
    return staff(username, password=password)


def flipper(username: str = "olivia", *, password=None):
    """Olivia runs operations: staff, allowed to flip the switch and flush the cache."""
    return staff(username, permissions=(FLIP_PERMISSION,), password=password)


def plain_user(username: str = "mark", *, password=None):
    """Mark works in sales: he can log in, but is not staff, so the dashboard refuses him."""
    return get_user_model().objects.create_user(username, password=password)


def superuser(username: str = "root", *, password=None):
    """Everything in the admin, the flip permission included."""
    return get_user_model().objects.create_superuser(username, "", password)


def signed_in(user, **client_options) -> Client:
    """A test client logged in as `user` (without the login form)."""
    client = Client(**client_options)
    client.force_login(user)
    return client


def session_id(user) -> str:
    """The session cookie's value of a fresh login of `user`, for clients other than Django's
    (a websocket, a browser)."""
    return signed_in(user).cookies["sessionid"].value
