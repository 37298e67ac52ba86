"""The monitoring HTTP API: health, metrics, alerts, the event stream and /metrics."""
