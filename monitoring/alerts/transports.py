"""Notification channels, each a small class with `notify()` that raises TransportError."""

import smtplib

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


def configured_transports() -> list[Transport]:
    return [t for t in (SlackTransport(), EmailTransport()) if t.configured()]
