from datetime import UTC, timedelta

from django import forms
from django.utils import timezone

from monitoring.alerts.durations import parse_duration
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


class SilenceForm(ReasonForm):
    """A silence as the Silences page asks for it: times in UTC, the length as typed."""

    rule = forms.ChoiceField(required=False)
    owner = forms.CharField(max_length=150, required=False)
    starts_at = forms.DateTimeField(
        required=False, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
    )
    duration = forms.CharField(
        max_length=20,
        error_messages={"required": "Say how long: e.g. 30m, 2h, 1d or 1h30m."},
    )
    weekly = forms.BooleanField(required=False)

    def __init__(self, *args, rules: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rule"].choices = [("", "every rule"), *((name, name) for name in rules)]

    def clean_starts_at(self):
        moment = self.cleaned_data.get("starts_at")
        return moment.replace(tzinfo=UTC) if moment is not None else None

    def clean_duration(self):
        try:
            return parse_duration(self.cleaned_data["duration"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
