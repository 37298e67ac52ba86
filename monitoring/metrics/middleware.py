"""Times every request and counts its SQL queries, by route group (METRICS_ROUTE_GROUPS)."""

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.db.backends.signals import connection_created

from monitoring.metrics.recorder import RequestStats, current_request, recorder

# The group of every request no METRICS_ROUTE_GROUPS prefix matches.
OTHER_GROUP = "other"


def route_group(path: str) -> str:
    for prefix, group in settings.METRICS_ROUTE_GROUPS:
        if path.startswith(prefix):
            return group
    return OTHER_GROUP


def count_query(execute, sql, params, many, context):
    stats = current_request.get()
    if stats is not None:
        stats.sql += 1
    return execute(sql, params, many, context)


def _install_query_counter(sender, connection, **kwargs) -> None:
    # Every connection, in any thread: sync_to_async copies the request's context, so a query
    # run in a worker thread is counted against the request that caused it.
    if count_query not in connection.execute_wrappers:
        # First, not last: `connection.execute_wrapper()` pops the last wrapper when its block
        # ends, and must not take this one with it.
        connection.execute_wrappers.insert(0, count_query)


connection_created.connect(_install_query_counter, dispatch_uid="opsdash-count-queries")


class RequestMetricsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        if not settings.METRICS_ENABLED:
            raise MiddlewareNotUsed("METRICS_ENABLED=false")
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        stats, token, started = self._start()
        response = self.get_response(request)
        self._finish(request, response, stats, token, started)
        return response

    async def _acall(self, request):
        stats, token, started = self._start()
        response = await self.get_response(request)
        self._finish(request, response, stats, token, started)
        return response

    def _start(self):
        stats = RequestStats()
        return stats, current_request.set(stats), time.perf_counter()

    def _finish(self, request, response, stats, token, started) -> None:
        elapsed = time.perf_counter() - started
        current_request.reset(token)
        recorder.record(route_group(request.path), response.status_code, elapsed, stats.sql)
