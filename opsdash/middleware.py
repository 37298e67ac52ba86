"""Django's stock middleware whose hooks do no I/O, made async-native.

Under ASGI, Django runs each hook of a synchronous-style middleware (`process_request`,
`process_response`) in a worker thread: two thread hops per middleware per request. The hooks
of these three only read the request and set headers or answer a redirect, so they are called
inline instead, on the event loop (or in the request's thread, when the chain is synchronous).
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware


def inline(stock: type) -> type:
    """`stock`'s hooks, called directly in either mode."""

    class Inline:
        sync_capable = True
        async_capable = True

        def __init__(self, get_response) -> None:
            self.get_response = get_response
            self.hooks = stock(get_response)
            self.is_async = iscoroutinefunction(get_response)
            if self.is_async:
                markcoroutinefunction(self)

        def __call__(self, request):
            if self.is_async:
                return self._acall(request)
            early = self._before(request)
            return self._after(request, early or self.get_response(request))

        async def _acall(self, request):
            early = self._before(request)
            return self._after(request, early or await self.get_response(request))

        def _before(self, request):
            hook = getattr(self.hooks, "process_request", None)
            return hook(request) if hook else None

        def _after(self, request, response):
            hook = getattr(self.hooks, "process_response", None)
            return hook(request, response) if hook else response

    Inline.__name__ = Inline.__qualname__ = f"Inline{stock.__name__}"
    Inline.__doc__ = f"{stock.__module__}.{stock.__name__}, async-native (see opsdash.middleware)."
    return Inline


SecurityHeadersMiddleware = inline(SecurityMiddleware)
CommonHeadersMiddleware = inline(CommonMiddleware)
FrameOptionsMiddleware = inline(XFrameOptionsMiddleware)
