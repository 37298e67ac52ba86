"""Misconfiguration reported as system checks (`manage.py check`), each with an id and a hint."""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning

REDIS_SCHEMES = {"redis", "rediss", "unix", "redis+sentinel"}


def check_security(app_configs=None, **kwargs) -> list:
    problems = []
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEFAULT_SECRET_KEY:
        problems.append(
            Error(
                "DEBUG is off but SECRET_KEY is the built-in default.",
                hint="Set SECRET_KEY to a long random value (python -c 'import secrets; "
                "print(secrets.token_urlsafe(50))').",
                id="opsdash.E001",
            )
        )
    if not settings.DEBUG and not settings.PUBLIC_BASE_URL.startswith("https://"):
        problems.append(
            Warning(
                f"PUBLIC_BASE_URL is {settings.PUBLIC_BASE_URL!r}, not https.",
                hint="Twilio signs the public https URL; set PUBLIC_BASE_URL to it.",
                id="opsdash.W007",
            )
        )
    return problems


def check_redis(app_configs=None, **kwargs) -> list:
    problems = []
    if settings.REDIS_ENABLED is True and not settings.REDIS_URL:
        problems.append(
            Error(
                "REDIS_ENABLED=true but REDIS_URL is not set.",
                hint="Set REDIS_URL (redis:// or rediss://), or unset REDIS_ENABLED.",
                id="opsdash.E002",
            )
        )
    problems += _sentinel_problems()
    if settings.REDIS_URL and urlsplit(settings.REDIS_URL).scheme not in REDIS_SCHEMES:
        problems.append(
            Error(
                f"REDIS_URL has the scheme {urlsplit(settings.REDIS_URL).scheme!r}.",
                hint="Use redis:// (plain), rediss:// (TLS, certificate verified), unix:// or "
                "redis+sentinel://host:port,host:port/SERVICE/0 (Redis under Sentinel).",
                id="opsdash.E003",
            )
        )
    slowest = max(settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT)
    if slowest > 1:
        problems.append(
            Warning(
                f"A Redis timeout is {slowest} s: a hung Redis would stall requests that long.",
                hint="Keep REDIS_SOCKET_TIMEOUT and REDIS_CONNECT_TIMEOUT in tens of milliseconds.",
                id="opsdash.W004",
            )
        )
    if settings.REDIS_URL and settings.CHANNEL_REDIS_URL == settings.REDIS_URL:
        problems.append(
            Warning(
                "The channel layer uses the cache Redis: one outage stops both.",
                hint="Point CHANNEL_REDIS_URL at a separate Redis (or another database).",
                id="opsdash.W005",
            )
        )
    return problems


def _sentinel_hint(prefix: str) -> str:
    url = "REDIS_URL" if prefix == "REDIS" else "CHANNEL_REDIS_URL"
    return (
        f"Set {prefix}_SENTINELS=host:26379,host:26379 with {prefix}_SENTINEL_SERVICE=<the name "
        f"the sentinels monitor>, or {url}=redis+sentinel://[:password@]host:26379,host:26379"
        "/SERVICE/0, not both."
    )


def _sentinel_problems() -> list:
    """A Sentinel configuration that cannot be used (settings keeps its error, not raised)."""
    found = []
    for what, error, prefix in (
        ("the cache", settings.REDIS_SENTINEL_ERROR, "REDIS"),
        ("the channel layer", settings.CHANNEL_REDIS_SENTINEL_ERROR, "CHANNEL_REDIS"),
    ):
        if error:
            found.append(
                Error(
                    f"The Redis Sentinel configuration of {what} is invalid: {error}.",
                    hint=_sentinel_hint(prefix),
                    id="opsdash.E008",
                )
            )
    return found


def check_deployment(app_configs=None, **kwargs) -> list:
    if settings.DEBUG or settings.DATABASE_IS_POSTGRES:
        return []
    return [
        Warning(
            "DEBUG is off but the database is SQLite.",
            hint="Set DATABASE_URL to PostgreSQL for a deployment (postgres://user:pass@host/db).",
            id="opsdash.W006",
        )
    ]


WEBHOOK_SECRETS = ["ELEVENLABS_INITIATION_SECRET", "ELEVENLABS_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN"]


def check_webhooks(app_configs=None, **kwargs) -> list:
    if not settings.WEBHOOK_VERIFY:
        if settings.DEBUG:
            return [
                Warning(
                    "WEBHOOK_VERIFY=false: webhooks accept unsigned deliveries.",
                    hint="Only for local experiments; configure the secrets instead.",
                    id="opsdash.W009",
                )
            ]
        return [
            Error(
                "WEBHOOK_VERIFY=false with DEBUG off: anyone can post fake calls and texts.",
                hint="Remove WEBHOOK_VERIFY and set the provider secrets.",
                id="opsdash.E004",
            )
        ]
    missing = [name for name in WEBHOOK_SECRETS if not getattr(settings, name)]
    if not missing or settings.DEBUG:
        return []
    return [
        Warning(
            f"{', '.join(missing)} not set: the matching webhook endpoints refuse every delivery.",
            hint="Set each secret to the value configured at the provider (see README, Webhooks).",
            id="opsdash.W008",
        )
    ]


def check_deploy_secrets(app_configs=None, **kwargs) -> list:
    """`check --deploy`: every secret production must set itself, by name."""
    missing = [name for name in WEBHOOK_SECRETS if not getattr(settings, name)]
    if not settings.MONITORING_TOKEN:
        missing.append("MONITORING_TOKEN")
    if settings.SECRET_KEY == settings.DEFAULT_SECRET_KEY:
        missing.append("SECRET_KEY")
    if not missing:
        return []
    return [
        Error(
            f"not set for production: {', '.join(missing)}.",
            hint="Set each in the environment (see README, Configuration); the webhook "
            "secrets are the values configured at each provider.",
            id="opsdash.E005",
        )
    ]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_bind_errors(host: str, webhook_secrets: dict[str, str]) -> list:
    """`serve` on an address other than loopback: DEBUG must be off (its error pages show code
    and settings) and every webhook secret set (else nobody's, or anybody's, deliveries)."""
    if is_loopback(host):
        return []
    errors = []
    if settings.DEBUG:
        errors.append(
            Error(
                f"DEBUG is on while serving on {host}: error pages would show code and settings.",
                hint="Set DEBUG=false (and SECRET_KEY, ALLOWED_HOSTS) to serve beyond this host.",
                id="opsdash.E006",
            )
        )
    missing = [name for name, value in webhook_secrets.items() if not value]
    if missing:
        errors.append(
            Error(
                f"{', '.join(missing)} not set while serving on {host}.",
                hint="Set each to the value configured at the provider.",
                id="opsdash.E007",
            )
        )
    return errors
