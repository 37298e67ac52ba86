"""GET /metrics: the deployment's figures for Prometheus, written by prometheus_client from the
collectors in monitoring.metrics.exposition. The format follows the scraper's Accept header as
the library's own exporters do: Prometheus' text format (version 0.0.4 when nothing else is
asked for) or OpenMetrics."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from monitoring.api.access import monitoring_access
from monitoring.metrics.exposition import registry


@require_GET
@monitoring_access
def metrics(request: HttpRequest) -> HttpResponse:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)
