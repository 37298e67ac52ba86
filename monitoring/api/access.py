"""Who may read the monitoring API: a staff session, or `Authorization: Bearer
<MONITORING_TOKEN>`. Anyone else gets 401 JSON (never a redirect to a login page)."""

import functools
import hmac

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def bearer_ok(request: HttpRequest) -> bool:
    token = settings.MONITORING_TOKEN
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def denied() -> JsonResponse:
    response = JsonResponse(
        {"error": "authentication required: a staff session or a Bearer token"}, status=401
    )
    response["WWW-Authenticate"] = 'Bearer realm="opsdash monitoring"'
    return response


def actor(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user.get_username()
    return "api token"


def monitoring_access(view):
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            if bearer_ok(request):
                return await view(request, *args, **kwargs)
            user = await request.auser()
            if not (user.is_authenticated and user.is_staff):
                return denied()
            return await view(request, *args, **kwargs)

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if bearer_ok(request):
            return view(request, *args, **kwargs)
        if not (request.user.is_authenticated and request.user.is_staff):
            return denied()
        # A session-authenticated change still needs its CSRF token (a token request does not).
        if request.method not in SAFE_METHODS:
            rejected = CsrfViewMiddleware(lambda r: None).process_view(request, view, args, kwargs)
            if rejected is not None:
                return rejected
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)
