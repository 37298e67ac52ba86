from django.apps import AppConfig


class LeadsConfig(AppConfig):
    name = "leads"
    verbose_name = "Leads and conversations"

    def ready(self) -> None:
        from leads import invalidation, live

        invalidation.connect()
        live.connect()
