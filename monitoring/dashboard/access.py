"""Who may see the dashboard (staff) and who may flip the switch (a dedicated permission)."""

import functools

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from monitoring.cache.controls import FLIP_PERMISSION, may_flip  # noqa: F401  (one definition)


def staff_required(view):
    """Anonymous visitors go to the login page; logged-in users who are not staff get 403
    (sending them to a login page they are already past would loop)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("the dashboard is for staff")
        return view(request, *args, **kwargs)

    return wrapper


def flip_permission_required(view):
    """For the switch and flush actions: staff with the flip permission, else 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not may_flip(request.user):
            raise PermissionDenied("needs the permission to flip the cache switch")
        return view(request, *args, **kwargs)

    return staff_required(wrapper)
