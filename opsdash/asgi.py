"""The ASGI entry point daphne serves: HTTP (the webhooks on their own lean handler; pages,
APIs and static files on Django's) and websockets (Channels)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opsdash.settings")
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from monitoring import runtime  # noqa: E402
from monitoring.dashboard.consumers import DashboardConsumer  # noqa: E402
from monitoring.dashboard.origins import SameOriginValidator  # noqa: E402
from opsdash.intake_handler import IntakeHandler, by_path  # noqa: E402

websocket_routes = [
    path("ws/monitoring/", DashboardConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": by_path(intake=IntakeHandler(), pages=ASGIStaticFilesHandler(django_http)),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_routes))),
    }
)

runtime.start()
