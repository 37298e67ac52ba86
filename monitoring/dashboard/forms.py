from datetime import timedelta

from django import forms
from django.utils import timezone

from monitoring.api.alerts import STATES
from monitoring.models import Alert

PERIODS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


class AlertFilterForm(forms.Form):
    state = forms.ChoiceField(
        choices=[(name, name) for name in STATES], required=False, initial="all"
    )
    severity = forms.ChoiceField(
        choices=[("", "any"), *Alert.Severity.choices], required=False, initial=""
    )
    period = forms.ChoiceField(
        choices=[("", "any time"), *((name, f"last {name}") for name in PERIODS)],
        required=False,
        initial="",
    )

    def filters(self) -> dict:
        """The filters to apply: the valid choices, the defaults for anything else."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        period = data.get("period") or ""
        return {
            "state": data.get("state") or "all",
            "severity": data.get("severity") or "",
            "since": timezone.now() - PERIODS[period] if period else None,
        }


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        error_messages={"required": "A reason is required: say why, for the audit log."},
    )

    def error_text(self) -> str:
        return " ".join(str(error) for errors in self.errors.values() for error in errors)


class SwitchForm(ReasonForm):
    enabled = forms.TypedChoiceField(
        choices=[("on", "on"), ("off", "off")], coerce=lambda value: value == "on"
    )


class AcknowledgeForm(forms.Form):
    note = forms.CharField(max_length=500, required=False)
