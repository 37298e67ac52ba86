"""The ASGI handler of the webhooks (`/webhooks/`): Django's, without what they do not use.

The providers' webhooks need no session, user, CSRF token or messages, and a caller on the line
waits for every thread hop. So this handler runs its own short middleware chain
(INTAKE_MIDDLEWARE: metrics and security headers, both async-native), does not watch for the
client going away (a delivery is recorded to the end either way), and sends no request signals:
an async view (the initiation answer) runs on the event loop with no thread at all; a sync view
runs in the request's own thread, whose database connection is released there afterwards, as
Django's own handler does.
"""

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

PREFIX = "/webhooks/"


class IntakeHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = True) -> None:
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.INTAKE_MIDDLEWARE):
            middleware = import_string(path)
            if not getattr(middleware, "async_capable", False):
                raise TypeError(f"{path} is not async-capable: it has no place on the intake path")
            try:
                handler = convert_exception_to_response(middleware(handler))
            except MiddlewareNotUsed:
                continue
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handler

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:  # the client went away before its body was in: nothing to answer
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, refused = self.create_request(scope, body_file)
            response = refused or await self.run_get_response(request)
            _declare_length(response)
            await self.send_response(response, send)
            await self._release(request, response)
        finally:
            body_file.close()

    async def _release(self, request, response: HttpResponseBase) -> None:
        match = getattr(request, "resolver_match", None)
        if match is not None and not iscoroutinefunction(match.func):
            # A sync view used a database connection in this request's thread: closed there,
            # through the signal, as Django's handler does.
            await sync_to_async(response.close)()
            return
        for closer in response._resource_closers:
            closer()
        response._resource_closers.clear()
        response.closed = True


def _declare_length(response: HttpResponseBase) -> None:
    """Content-Length on every complete answer, as CommonMiddleware sets it on the other paths
    (without it daphne answers chunked, which clients that keep connections alive for many
    deliveries cannot all read)."""
    if not response.streaming and not response.has_header("Content-Length"):
        response.headers["Content-Length"] = str(len(response.content))


def by_path(intake, pages):
    """The HTTP app: the webhooks on `intake`, everything else (pages, APIs, static) on `pages`."""

    async def http(scope, receive, send):
        app = intake if scope["path"].startswith(PREFIX) else pages
        await app(scope, receive, send)

    return http
