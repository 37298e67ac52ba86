"""Notification channels, each a small class with `notify()` that raises TransportError."""

import smtplib
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from monitoring import http

# Slack's answers that no retry can fix.
SLACK_PERMANENT = {400, 403, 404, 410}


class TransportError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport:
    name = ""
    # The outbox events this channel is told of (monitoring.alerts.notify.enqueue writes a row
    # only for these); an acknowledgement is news only to a channel that pages someone.
    events = frozenset({"firing", "resolved", "rollback"})

    def configured(self) -> bool:
        raise NotImplementedError

    def notify(self, context: dict) -> None:
        raise NotImplementedError


class SlackTransport(Transport):
    """Slack incoming webhook: 200 "ok" is success; see PROVIDERS.md for the errors."""

    name = "slack"

    def configured(self) -> bool:
        return bool(settings.REDIS_ALERT_WEBHOOK_URL)

    def notify(self, context: dict) -> None:
        text = render_to_string("monitoring/alerts/slack.txt", context).strip()
        try:
            status, body = http.post_json(
                settings.REDIS_ALERT_WEBHOOK_URL, {"text": text}, settings.NOTIFICATION_TIMEOUT
            )
        except OSError as exc:
            raise TransportError(f"no answer: {exc}") from None
        if status == 200:
            return
        raise TransportError(f"HTTP {status}: {body[:200]}", permanent=status in SLACK_PERMANENT)


class EmailTransport(Transport):
    name = "email"

    def configured(self) -> bool:
        return bool(settings.ALERT_EMAILS)

    def notify(self, context: dict) -> None:
        subject = render_to_string("monitoring/alerts/email_subject.txt", context).strip()
        body = render_to_string("monitoring/alerts/email_body.txt", context)
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, settings.ALERT_EMAILS)
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"recipients refused: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"mail not sent: {exc}") from None


# Events API v2 actions per outbox event. The test message resolves an incident that was never
# opened: PagerDuty accepts it (so the key and the endpoint are proven) and pages nobody.
PAGERDUTY_ACTIONS = {
    "firing": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
    "test": "resolve",
}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}
# The Events API caps a dedup_key at 255 characters.
DEDUP_KEY_MAX = 255


class PagerDutyTransport(Transport):
    """PagerDuty Events API v2: one incident per alert (its dedup_key) triggered on firing,
    acknowledged and resolved with the alert; 2xx (202) is success, a 4xx but 408 and 429 is
    final. The routing key is a secret: it travels in the body only and is cut out of any answer
    kept as an error."""

    name = "pagerduty"
    events = frozenset({"firing", "acknowledged", "resolved"})

    def configured(self) -> bool:
        return bool(settings.PAGERDUTY_ROUTING_KEY)

    def notify(self, context: dict) -> None:
        try:
            status, body = http.post_json(
                settings.PAGERDUTY_EVENTS_URL,
                pagerduty_event(context),
                settings.NOTIFICATION_TIMEOUT,
            )
        except OSError as exc:
            raise TransportError(hide_routing_key(f"no answer: {exc}")) from None
        if 200 <= status < 300:
            return
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise TransportError(f"HTTP {status}: {hide_routing_key(body)[:200]}", permanent=permanent)


def pagerduty_event(context: dict) -> dict:
    """The Events API v2 body for one outbox event (or the test message)."""
    alert = context.get("alert")
    event = {
        "routing_key": settings.PAGERDUTY_ROUTING_KEY,
        "event_action": PAGERDUTY_ACTIONS[context["event"]],
        "dedup_key": dedup_key(alert.pk if alert else None),
    }
    if context["event"] != "firing":
        return event  # acknowledge and resolve need only the key of the incident
    started = alert.fired_at or alert.started_at
    event["payload"] = {
        "summary": alert.summary,
        "source": urlsplit(settings.PUBLIC_BASE_URL).netloc or "opsdash",
        "severity": alert.severity if alert.severity in PAGERDUTY_SEVERITIES else "error",
        "timestamp": started.isoformat(),
        "component": "opsdash",
        "class": alert.rule,
        "custom_details": {
            "rule": alert.rule,
            "value": context.get("value"),
            "threshold": alert.threshold,
            "started_at": alert.started_at.isoformat(),
        },
    }
    event["links"] = [{"href": context["dashboard_url"], "text": "The alert in opsdash"}]
    event["client"] = "opsdash"
    event["client_url"] = context["dashboard_url"]
    return event


def dedup_key(alert_id: int | None) -> str:
    """One incident per alert and deployment: the alert's id alone would let two deployments
    sending to one routing key (staging and production, say) resolve each other's incidents, so
    the key names the deployment by its public address."""
    parts = urlsplit(settings.PUBLIC_BASE_URL)
    deployment = (parts.netloc + parts.path) or "opsdash"
    what = f"alert-{alert_id}" if alert_id is not None else "test"
    return f"opsdash-{what}@{deployment}"[:DEDUP_KEY_MAX]


def hide_routing_key(text: str) -> str:
    key = settings.PAGERDUTY_ROUTING_KEY
    return text.replace(key, "[routing key]") if key else text


def configured_transports() -> list[Transport]:
    every = (SlackTransport(), EmailTransport(), PagerDutyTransport())
    return [t for t in every if t.configured()]
