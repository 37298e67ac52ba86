from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring.cache import gate
        from monitoring.metrics import middleware  # noqa: F401  (counts queries on new connections)

        gate.connect_signals()
