"""Which pages may open the live feed's websocket: only the app's own origin (scheme, host and
port, as the browser sent them to reach this page) or one listed in CSRF_TRUSTED_ORIGINS. A
page on another port or scheme of the same host is another origin, and is refused: the feed
carries SMS bodies, and the browser would send the staff cookie along."""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host


class SameOriginValidator:
    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)


def allowed(scope) -> bool:
    headers = {
        name.decode("latin1").lower(): value.decode("latin1") for name, value in scope["headers"]
    }
    origin, host = headers.get("origin", ""), headers.get("host", "")
    if not origin or not host:
        return False
    own = f"{_page_scheme(scope, headers)}://{host}".lower()
    if origin.lower() == own:
        return validate_host(urlsplit(own).hostname or "", settings.ALLOWED_HOSTS)
    return origin.lower() in {o.lower() for o in settings.CSRF_TRUSTED_ORIGINS}


def _page_scheme(scope, headers: dict) -> str:
    """The scheme of the page that opened the socket: https behind a TLS proxy that says so
    (SECURE_PROXY_SSL_HEADER), or when the socket itself is wss."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy is not None:
        name, value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower()
        if headers.get(header, "").split(",")[0].strip().lower() == value:
            return "https"
    return "https" if scope.get("scheme") == "wss" else "http"
