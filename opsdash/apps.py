from django.apps import AppConfig
from django.core.checks import Tags, register


class OpsdashConfig(AppConfig):
    name = "opsdash"
    verbose_name = "opsdash"

    def ready(self) -> None:
        from opsdash import checks, logins  # noqa: F401  (logins: its signal receiver)

        register(checks.check_security, Tags.security, deploy=False)
        register(checks.check_redis, Tags.caches)
        register(checks.check_deployment, Tags.database)
        register(checks.check_webhooks, Tags.security)
        register(checks.check_deploy_secrets, Tags.security, deploy=True)
