"""Sign-in throttling, for every login form (the dashboard's and the admin's): after
LOGIN_FAILURE_LIMIT failures within LOGIN_FAILURE_WINDOW_SECONDS for one user name, or from one
address, further attempts are refused without checking the password, until the window has
moved on. A refused attempt looks like any failed one (nothing tells a guesser it hit the
limit); it is logged for the operator."""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from opsdash.models import LoginFailure

log = logging.getLogger(__name__)


def client_address(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown")[:64] if request is not None else "unknown"


def too_many_failures(username: str, address: str) -> bool:
    since = timezone.now() - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    recent = LoginFailure.objects.filter(at__gte=since)
    by_name = recent.filter(username=username[:150]).count()
    by_address = recent.filter(address=address).count()
    return max(by_name, by_address) >= settings.LOGIN_FAILURE_LIMIT


class ThrottledModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        name = username or kwargs.get("email") or ""
        address = client_address(request)
        if too_many_failures(name, address):
            log.warning("login: too many failures for %r or from %s; refused", name[:150], address)
            raise PermissionDenied("too many failed sign-ins")
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(user_login_failed, dispatch_uid="opsdash-login-failed")
def _note_failure(sender, credentials, request=None, **kwargs) -> None:
    now = timezone.now()
    LoginFailure.objects.create(
        username=str(credentials.get("username") or "")[:150],
        address=client_address(request),
        at=now,
    )
    cutoff = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    LoginFailure.objects.filter(Q(at__lt=cutoff)).delete()
