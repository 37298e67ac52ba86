from django.core.management.base import BaseCommand, CommandError

from monitoring.alerts.notify import send_test_notification


class Command(BaseCommand):
    help = (
        "Send a test message through every configured alert channel (Slack: "
        "REDIS_ALERT_WEBHOOK_URL; e-mail: ALERT_EMAILS; PagerDuty: PAGERDUTY_ROUTING_KEY, a "
        "resolve of an incident never opened, so nobody is paged). Exit status 1 if none is "
        "configured or one did not deliver."
    )

    def handle(self, *args, **options):
        outcomes = send_test_notification()
        if not outcomes:
            raise CommandError(
                "no alert channel is configured (REDIS_ALERT_WEBHOOK_URL, ALERT_EMAILS, "
                "PAGERDUTY_ROUTING_KEY)"
            )
        for channel, status in outcomes.items():
            self.stdout.write(f"{channel}: {status}")
        failed = [channel for channel, status in outcomes.items() if status != "sent"]
        if failed:
            raise CommandError(f"not delivered: {', '.join(failed)} (see the delivery log)")
