"""opsdash settings: the only module that reads the environment.

Every variable is documented in README.md ("Configuration"). With nothing set, opsdash runs on one
machine: SQLite under ./var, the in-memory channel layer, and the private Redis that
`manage.py serve` starts (or no Redis at all).
"""

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from monitoring.sentinel_urls import is_sentinel_url, parse_sentinel_hosts, parse_sentinel_url

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")
# The one-machine default's files: SQLite, the embedded redis-server's socket, the secrets.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _strict_bool(name: str, default: bool | None) -> bool | None:
    """A boolean that refuses anything but an explicit true/false word ("flase" is an error)."""
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true or false")


def _positive_float(name: str, default: float) -> float:
    value = env.float(name, default=default)
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, got {value}")
    return value


def _one_of(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.str(name, default=default).strip().lower() or default
    if raw not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r}: use one of {', '.join(choices)}")
    return raw


# --- core -----------------------------------------------------------------------------------

DEFAULT_SECRET_KEY = "opsdash-insecure-default-key-for-local-use-only"
DEBUG = _strict_bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEFAULT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://localhost:8000").rstrip("/")

# HTTPS behind a TLS-terminating proxy (production): secure cookies and redirects by default
# when DEBUG is off; HSTS only when asked for (it cannot be taken back from browsers quickly).
SECURE_SSL_REDIRECT = _strict_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Probes and scrapers may call over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^api/monitoring/health", r"^metrics$"]
SESSION_COOKIE_SECURE = _strict_bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = _strict_bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _strict_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = _strict_bool("SECURE_HSTS_PRELOAD", default=False)
if _strict_bool("TRUST_X_FORWARDED_PROTO", default=False):
    # Only behind a proxy that sets this header itself (and strips it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

AUTHENTICATION_BACKENDS = ["opsdash.logins.ThrottledModelBackend"]
# Sign-in throttling (opsdash.logins): failures per user name or address within the window.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=900)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "opsdash",
    "monitoring",
    "leads",
]

# The stock middleware whose hooks do no I/O runs inline (opsdash.middleware): no thread hops.
MIDDLEWARE = [
    "monitoring.metrics.middleware.RequestMetricsMiddleware",
    "opsdash.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "opsdash.middleware.CommonHeadersMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "opsdash.middleware.FrameOptionsMiddleware",
]
# The webhooks' own chain under ASGI (opsdash.intake_handler): only what they use.
INTAKE_MIDDLEWARE = [
    "monitoring.metrics.middleware.RequestMetricsMiddleware",
    "opsdash.middleware.SecurityHeadersMiddleware",
    "opsdash.middleware.FrameOptionsMiddleware",
]

ROOT_URLCONF = "opsdash.urls"
ASGI_APPLICATION = "opsdash.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "monitoring.dashboard.context_processors.dashboard",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- database -------------------------------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
# Under ASGI every request may run on a different thread; a persistent connection per thread
# leaks connections, so connections are borrowed from psycopg's pool instead.
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASE_IS_POSTGRES:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
        "timeout": _positive_float("DATABASE_POOL_TIMEOUT", default=5.0),
    }
    DATABASES["default"]["OPTIONS"]["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", 3)
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("DATABASE_TEST_NAME", default=f"test_{DATABASES['default']['NAME']}"),
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    # Take the write lock when a transaction starts: a read-then-write transaction (the alert
    # evaluator's) then waits its turn instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # A file, not memory, so that a test's subprocess can open the same test database.
    # Per process, so that two test runs on one checkout do not share (and break) one file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

# --- Redis cache ----------------------------------------------------------------------------

_REDIS_URL_SET = bool(env.str("REDIS_URL", default="") or env.str("REDIS_SENTINELS", default=""))
_REDIS_EMBEDDED_URL = None
# The private redis-server `manage.py serve` starts when REDIS_URL is unset.
REDIS_EMBEDDED_SOCKET = VAR_DIR / "redis.sock"
REDIS_EMBEDDED = _strict_bool("REDIS_EMBEDDED", default=None)
if not _REDIS_URL_SET and REDIS_EMBEDDED is None and REDIS_EMBEDDED_SOCKET.exists():
    # `manage.py serve` is running its private Redis: commands run beside it use it too.
    _REDIS_EMBEDDED_URL = f"unix://{REDIS_EMBEDDED_SOCKET}"
    REDIS_EMBEDDED = True
REDIS_EMBEDDED = bool(REDIS_EMBEDDED)
# None: not pinned, the runtime switch governs. False: pinned off (the emergency lever).
# True: the runtime switch governs, and a missing REDIS_URL is a configuration error.
REDIS_ENABLED = _strict_bool("REDIS_ENABLED", default=None)
REDIS_SOCKET_TIMEOUT = _positive_float("REDIS_SOCKET_TIMEOUT", default=0.05)
REDIS_CONNECT_TIMEOUT = _positive_float("REDIS_CONNECT_TIMEOUT", default=0.05)
REDIS_TLS_CA_FILE = env.str("REDIS_TLS_CA_FILE", default="") or None
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=50)
REDIS_BREAKER_FAILURES = env.int("REDIS_BREAKER_FAILURES", default=3)
REDIS_BREAKER_COOLDOWN = _positive_float("REDIS_BREAKER_COOLDOWN", default=5.0)
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="opsdash")
CACHE_DEFAULT_TTL = env.int("CACHE_DEFAULT_TTL", default=3600)
# How often each process re-reads the switch row, so a flip reaches it even if a broadcast is lost.
SWITCH_REFRESH_SECONDS = _positive_float("SWITCH_REFRESH_SECONDS", default=0.5)
# After the cache moves to another Redis server (a restart, a failover: a new generation), a
# process still reaching the previous one answers from the database for this long instead of
# moving the generation back (two servers seen at once must not empty the cache over and over).
REDIS_SERVER_SETTLE_SECONDS = env.float("REDIS_SERVER_SETTLE_SECONDS", default=30.0)
# How often a process that writes says it is alive; one silent for 4 beats without a clean
# exit gets a new generation (it may have died owing an invalidation).
WRITER_BEAT_SECONDS = _positive_float("WRITER_BEAT_SECONDS", default=5.0)


def _redis_pool_kwargs(url: str | None) -> dict:
    kwargs = {"max_connections": REDIS_MAX_CONNECTIONS}
    if url and urlsplit(url).scheme == "rediss":
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = True
        if REDIS_TLS_CA_FILE:
            kwargs["ssl_ca_certs"] = REDIS_TLS_CA_FILE
    return kwargs


def sentinel_url(sentinels: str, service: str) -> str:
    """REDIS_SENTINELS and REDIS_SENTINEL_SERVICE written as one redis+sentinel:// URL."""
    hosts = ",".join(f"{h}:{p}" for h, p in parse_sentinel_hosts(sentinels))
    if not service.strip() or "/" in service:
        raise ValueError(f"the service name {service!r} is empty or holds a '/'")
    return f"redis+sentinel://{hosts}/{service.strip()}/0"


def _sentinel_settings(url_name: str, hosts_name: str, service_name: str):
    """(URL, error or ""): `url_name`, or one composed from `hosts_name` and `service_name`.
    A wrong Sentinel configuration is not raised here: the system checks name it (opsdash.E008)
    with the rest of what is wrong, and meanwhile that Redis is not used (URL None)."""
    url = env.str(url_name, default="") or None
    hosts, service = env.str(hosts_name, default=""), env.str(service_name, default="")
    try:
        if hosts or service:
            if not (hosts and service):
                raise ValueError(f"{hosts_name} and {service_name} must be set together")
            if url:
                raise ValueError(f"{url_name} is set too: use either it or {hosts_name}")
            url = sentinel_url(hosts, service)
        if is_sentinel_url(url):
            parse_sentinel_url(url)
        return url, ""
    except ValueError as exc:
        return None, str(exc)


REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", default="") or None


def redis_cache_config(
    url: str,
    socket_timeout: float = REDIS_SOCKET_TIMEOUT,
    connect_timeout: float = REDIS_CONNECT_TIMEOUT,
) -> dict:
    """The django-redis cache the gate uses, for `url` (tests build throwaway ones with it)."""
    if is_sentinel_url(url):
        return _sentinel_cache_config(url, socket_timeout, connect_timeout)
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Bounded name resolution, and the server's run id asked on every new connection.
            "CONNECTION_FACTORY": "monitoring.cache.connection.GateConnectionFactory",
            "SOCKET_CONNECT_TIMEOUT": connect_timeout,
            "SOCKET_TIMEOUT": socket_timeout,
            "CONNECTION_POOL_KWARGS": _redis_pool_kwargs(url),
        },
    }


def _sentinel_cache_config(url: str, socket_timeout: float, connect_timeout: float) -> dict:
    """Under Sentinel: the primary the sentinels name, found again on every new connection
    (reads too go to the primary: a lagging replica would serve what a write invalidated)."""
    config = parse_sentinel_url(url)
    credentials = ""
    if config["password"]:
        credentials = f"{config['username'] or ''}:{config['password']}@"
    sentinel_kwargs = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if REDIS_SENTINEL_PASSWORD:
        sentinel_kwargs["password"] = REDIS_SENTINEL_PASSWORD
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        # django-redis's Sentinel form: the host is the service name.
        "LOCATION": f"redis://{credentials}{config['service']}/{config['db']}",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "CONNECTION_FACTORY": "monitoring.cache.connection.GateSentinelConnectionFactory",
            "SENTINELS": config["sentinels"],
            "SENTINEL_KWARGS": sentinel_kwargs,
            "SOCKET_CONNECT_TIMEOUT": connect_timeout,
            "SOCKET_TIMEOUT": socket_timeout,
            "CONNECTION_POOL_KWARGS": {"max_connections": REDIS_MAX_CONNECTIONS},
        },
    }


# Redis under Sentinel: REDIS_SENTINELS + REDIS_SENTINEL_SERVICE, or a redis+sentinel:// URL.
REDIS_URL, REDIS_SENTINEL_ERROR = _sentinel_settings(
    "REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_SERVICE"
)
if REDIS_URL is None and _REDIS_EMBEDDED_URL:
    REDIS_URL = _REDIS_EMBEDDED_URL

CACHES = {
    # Django's own cache (unused by the gate); Redis is reached only through monitoring.cache.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if REDIS_URL:
    CACHES["redis"] = redis_cache_config(REDIS_URL)

# --- channel layer --------------------------------------------------------------------------

CHANNEL_REDIS_URL, CHANNEL_REDIS_SENTINEL_ERROR = _sentinel_settings(
    "CHANNEL_REDIS_URL", "CHANNEL_REDIS_SENTINELS", "CHANNEL_REDIS_SENTINEL_SERVICE"
)


def channel_layer_host(url: str) -> str | dict:
    """channels_redis's host entry for `url`: the URL itself, or under Sentinel its sentinels
    and service (channels_redis asks them for the primary on every new connection)."""
    if not is_sentinel_url(url):
        return url
    config = parse_sentinel_url(url)
    host = {
        "sentinels": config["sentinels"],
        "master_name": config["service"],
        "db": config["db"],
        "sentinel_kwargs": {"password": REDIS_SENTINEL_PASSWORD} if REDIS_SENTINEL_PASSWORD else {},
    }
    if config["password"]:
        host.update(username=config["username"], password=config["password"])
    return host


if CHANNEL_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [channel_layer_host(CHANNEL_REDIS_URL)]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- domain ---------------------------------------------------------------------------------

# Country calling code assumed for numbers written without one ("555 123 4567").
PHONE_DEFAULT_COUNTRY_CODE = env.str("PHONE_DEFAULT_COUNTRY_CODE", default="1").lstrip("+")
if not (PHONE_DEFAULT_COUNTRY_CODE.isascii() and PHONE_DEFAULT_COUNTRY_CODE.isdigit()):
    raise ImproperlyConfigured(
        "PHONE_DEFAULT_COUNTRY_CODE must be a country calling code, e.g. 1 or 44"
    )
CALL_CONTEXT_MESSAGES = env.int("CALL_CONTEXT_MESSAGES", default=10)

# --- webhooks -------------------------------------------------------------------------------

# Set WEBHOOK_VERIFY=false only on a laptop: it accepts unsigned deliveries (check opsdash.E004).
WEBHOOK_VERIFY = _strict_bool("WEBHOOK_VERIFY", default=True)
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, WEBHOOK_MAX_BODY_BYTES + 1)
# On the one-machine default (SQLite) the webhook secrets default to this install's own random
# ones, which `manage.py serve` creates on its first start (LOCAL_SECRETS_FILE, readable by
# `manage.py demo traffic` to sign what it sends). Elsewhere, and in the environment: unset
# unless set. No secret is written in the code.
LOCAL_SECRETS_FILE = VAR_DIR / "webhook-secrets.json"
LOCAL_SECRET_NAMES = (
    "ELEVENLABS_INITIATION_SECRET",
    "ELEVENLABS_WEBHOOK_SECRET",
    "TWILIO_AUTH_TOKEN",
)


def _local_secrets() -> dict[str, str]:
    if DATABASE_IS_POSTGRES or not LOCAL_SECRETS_FILE.exists():
        return {}
    try:
        stored = json.loads(LOCAL_SECRETS_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {name: str(stored.get(name) or "") for name in LOCAL_SECRET_NAMES}


_LOCAL_SECRETS = _local_secrets()
ELEVENLABS_INITIATION_SECRET = env.str(
    "ELEVENLABS_INITIATION_SECRET", default=_LOCAL_SECRETS.get("ELEVENLABS_INITIATION_SECRET", "")
)
ELEVENLABS_INITIATION_HEADER = env.str("ELEVENLABS_INITIATION_HEADER", default="X-Webhook-Secret")
ELEVENLABS_WEBHOOK_SECRET = env.str(
    "ELEVENLABS_WEBHOOK_SECRET", default=_LOCAL_SECRETS.get("ELEVENLABS_WEBHOOK_SECRET", "")
)
# A signed post-call delivery is refused when its timestamp is older than this, or further than
# WEBHOOK_MAX_CLOCK_SKEW in the future.
WEBHOOK_MAX_AGE = env.int("WEBHOOK_MAX_AGE", default=30 * 60)
WEBHOOK_MAX_CLOCK_SKEW = env.int("WEBHOOK_MAX_CLOCK_SKEW", default=5 * 60)
# The call-initiation answer is sent within this many seconds whatever fails behind it.
INITIATION_TIME_BUDGET = _positive_float("INITIATION_TIME_BUDGET", default=0.5)
AGENT_LANGUAGE = env.str("AGENT_LANGUAGE", default="en")
# Writes taken off the call-initiation response: worker threads per process, the backlog past
# which a write runs at once in the caller's thread, and how long an exiting process drains.
DEFERRED_WORKERS = env.int("DEFERRED_WORKERS", default=4)
DEFERRED_MAX_QUEUE = env.int("DEFERRED_MAX_QUEUE", default=200)
DEFERRED_DRAIN_SECONDS = _positive_float("DEFERRED_DRAIN_SECONDS", default=30.0)
# Answered calls are appended to a spool of files here (one line each) and recorded from it in
# batches of RECORD_BATCH_SIZE: by the app's writer threads, or with RECORD_WORKER on by
# `manage.py record_worker` only (the app then only appends). A file is rotated after
# RECORD_SPOOL_ROTATE_LINES calls or RECORD_SPOOL_ROTATE_SECONDS; a batch that failed is tried
# again after RECORD_RETRY_SECONDS; record_worker looks for new files every
# RECORD_WORKER_POLL_SECONDS.
RECORD_SPOOL_DIR = Path(env.str("RECORD_SPOOL_DIR", default=str(VAR_DIR / "record-spool")))
RECORD_WORKER = _strict_bool("RECORD_WORKER", default=False)
RECORD_BATCH_SIZE = env.int("RECORD_BATCH_SIZE", default=100)
RECORD_SPOOL_ROTATE_LINES = env.int("RECORD_SPOOL_ROTATE_LINES", default=1000)
RECORD_SPOOL_ROTATE_SECONDS = _positive_float("RECORD_SPOOL_ROTATE_SECONDS", default=0.2)
RECORD_RETRY_SECONDS = _positive_float("RECORD_RETRY_SECONDS", default=1.0)
RECORD_WORKER_POLL_SECONDS = _positive_float("RECORD_WORKER_POLL_SECONDS", default=0.2)
TWILIO_AUTH_TOKEN = env.str(
    "TWILIO_AUTH_TOKEN", default=_LOCAL_SECRETS.get("TWILIO_AUTH_TOKEN", "")
)

# --- monitoring -----------------------------------------------------------------------------

# Requests are counted by the first of these path prefixes they start with ("other" if none).
METRICS_ROUTE_GROUPS = [
    ("/webhooks/elevenlabs/conversation-initiation", "webhook_initiation"),
    ("/webhooks/elevenlabs/post-call", "webhook_post_call"),
    ("/webhooks/twilio/sms/status", "webhook_sms_status"),
    ("/webhooks/twilio/sms", "webhook_sms"),
    ("/dashboard", "dashboard"),
    ("/api/monitoring", "monitoring_api"),
    ("/metrics", "monitoring_api"),
    ("/admin", "admin"),
]
# false: requests are not timed or counted (the recording's cost can be measured against it).
METRICS_ENABLED = _strict_bool("METRICS_ENABLED", default=True)
# Route groups left out of the traffic figures the alert rules judge (monitoring's own probes).
METRICS_NOT_TRAFFIC = ["monitoring_api"]
METRICS_FLUSH_SECONDS = _positive_float("METRICS_FLUSH_SECONDS", default=5.0)
METRICS_RETENTION_HOURS = env.int("METRICS_RETENTION_HOURS", default=24)
# The history: every process's windows merged into one row per minute, kept this many days,
# and minutes into one row per hour, kept this many days (the charts' 7 d and 30 d, the review).
METRICS_MINUTE_RETENTION_DAYS = env.int("METRICS_MINUTE_RETENTION_DAYS", default=14)
METRICS_HOUR_RETENTION_DAYS = env.int("METRICS_HOUR_RETENTION_DAYS", default=400)
# A minute is rolled up this many seconds after it ends, so every process has flushed into it.
METRICS_ROLLUP_DELAY_SECONDS = _positive_float("METRICS_ROLLUP_DELAY_SECONDS", default=15.0)
# false: no alert evaluation anywhere in the deployment (the app and `manage.py monitor` alike).
REDIS_MONITORING_ENABLED = _strict_bool("REDIS_MONITORING_ENABLED", default=True)
# false: the app processes run no evaluator and no notification worker, because a
# `manage.py monitor` process runs them (its own setting, so one environment serves both).
MONITORING_IN_APP = _strict_bool("MONITORING_IN_APP", default=True)
MONITORING_EVALUATE_SECONDS = _positive_float("MONITORING_EVALUATE_SECONDS", default=2.0)
MONITORING_LEASE_SECONDS = _positive_float("MONITORING_LEASE_SECONDS", default=6.0)
# Bearer token for the monitoring API and /metrics (staff sessions work too); unset: staff only.
MONITORING_TOKEN = env.str("MONITORING_TOKEN", default="")
REDIS_ALERT_WEBHOOK_URL = env.str("REDIS_ALERT_WEBHOOK_URL", default="")
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
# PagerDuty Events API v2: the integration's routing key (a secret); the URL is PagerDuty's own
# unless a proxy (or a test) stands in front of it.
PAGERDUTY_ROUTING_KEY = env.str("PAGERDUTY_ROUTING_KEY", default="")
PAGERDUTY_EVENTS_URL = env.str(
    "PAGERDUTY_EVENTS_URL", default="https://events.pagerduty.com/v2/enqueue"
)
NOTIFICATION_TIMEOUT = _positive_float("NOTIFICATION_TIMEOUT", default=5.0)
# Where the rollout runbook (docs/ROLLOUT.md) is published; each alert links to its section.
# Unset: the copy this app serves at /dashboard/runbook/.
ALERT_RUNBOOK_URL = env.str("ALERT_RUNBOOK_URL", default="")
# Caching turned off by the system when a qualifying alert has fired this long: "off" (never),
# "redis_lost" (the Redis connection alert), "critical" (any critical alert). Never turned on.
AUTO_ROLLBACK = _one_of("AUTO_ROLLBACK", ("off", "redis_lost", "critical"), default="off")
AUTO_ROLLBACK_AFTER_SECONDS = env.float("AUTO_ROLLBACK_AFTER_SECONDS", default=30.0)
# Attempts per message; between them a delay that starts at the backoff and doubles (cap 5 min).
NOTIFICATION_RETRIES = env.int("NOTIFICATION_RETRIES", default=6)
NOTIFICATION_BACKOFF_SECONDS = _positive_float("NOTIFICATION_BACKOFF_SECONDS", default=5.0)
NOTIFICATION_POLL_SECONDS = _positive_float("NOTIFICATION_POLL_SECONDS", default=1.0)
# Alert thresholds (defaults from the rollout runbook); "for" durations in seconds.
ALERT_HIT_RATE_CRITICAL = env.float("ALERT_HIT_RATE_CRITICAL", default=0.30)
ALERT_HIT_RATE_WARNING = env.float("ALERT_HIT_RATE_WARNING", default=0.60)
ALERT_HIT_RATE_MIN_LOOKUPS = env.int("ALERT_HIT_RATE_MIN_LOOKUPS", default=100)
ALERT_RESPONSE_MS_CRITICAL = env.float("ALERT_RESPONSE_MS_CRITICAL", default=150.0)
ALERT_RESPONSE_MS_WARNING = env.float("ALERT_RESPONSE_MS_WARNING", default=100.0)
ALERT_ERROR_RATE_CRITICAL = env.float("ALERT_ERROR_RATE_CRITICAL", default=0.05)
ALERT_MIN_REQUESTS = env.int("ALERT_MIN_REQUESTS", default=20)
ALERT_REDIS_MEMORY_WARNING = env.float("ALERT_REDIS_MEMORY_WARNING", default=0.80)
ALERT_FOR_SECONDS = env.int("ALERT_FOR_SECONDS", default=60)
ALERT_REDIS_DOWN_FOR_SECONDS = env.int("ALERT_REDIS_DOWN_FOR_SECONDS", default=2)
# The weekly review (`manage.py ops_report`, the dashboard's Review page): the runbook's
# success criteria, the warm-up after caching is turned on that the hit rate is judged after,
# and the counters and route group of the call initiations answered with the fallback.
REVIEW_HIT_RATE_TARGET = env.float("REVIEW_HIT_RATE_TARGET", default=0.70)
REVIEW_REDIS_UPTIME_TARGET = env.float("REVIEW_REDIS_UPTIME_TARGET", default=0.999)
REVIEW_WARM_UP_HOURS = env.float("REVIEW_WARM_UP_HOURS", default=1.0)
REVIEW_FALLBACK_COUNTERS = ["webhook.elevenlabs.initiation_fallback"]
REVIEW_INITIATION_GROUP = "webhook_initiation"
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = _strict_bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="opsdash@localhost")

# --- logging --------------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The process id tells apart the lines of `serve`'s several daphne processes.
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "opsdash": {"level": LOG_LEVEL},
        "monitoring": {"level": LOG_LEVEL},
        "leads": {"level": LOG_LEVEL},
    },
}


def environment_with(**overrides: str) -> dict[str, str]:
    """This process's environment plus `overrides`, for a child process (`manage.py serve`)."""
    return {**os.environ, **overrides}


if not DATABASE_IS_POSTGRES and DATABASES["default"]["NAME"].startswith(str(VAR_DIR)):
    VAR_DIR.mkdir(exist_ok=True)
