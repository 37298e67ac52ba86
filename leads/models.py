from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.dispatch import Signal

from leads.phones import InvalidPhoneNumber, normalize_phone


def _validate_phone(value: str) -> None:
    try:
        canonical = normalize_phone(value)
    except InvalidPhoneNumber as exc:
        raise ValidationError(str(exc)) from exc
    if canonical != value:
        raise ValidationError(f"store phone numbers in E.164 form ({canonical})")


# Sent by the lead domain's QuerySet.update() and bulk operations, which send no model signals,
# with the rows they change as they were before (`before`: dicts of the model's OBSERVED
# fields) and after (`after`: instances, or the changed values as `changes`): the cache's
# invalidation (leads.invalidation) sees every write path, not only save() and delete().
rows_changed = Signal()


class ObservedQuerySet(models.QuerySet):
    def update(self, **changes):
        before = self._observed_rows()
        count = super().update(**changes)
        rows_changed.send(sender=self.model, before=before, after=[], changes=changes)
        return count

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        rows_changed.send(sender=self.model, before=[], after=list(created), changes={})
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        count = super().bulk_update(objs, fields, *args, **kwargs)
        before = [obj.loaded_values() for obj in objs]
        rows_changed.send(sender=self.model, before=before, after=objs, changes={})
        return count

    def _observed_rows(self) -> list[dict]:
        fields = self.model.OBSERVED
        return list(self.values(*fields)) if fields else []


class Observed(models.Model):
    """Remembers the OBSERVED fields as loaded, so a write that moves a row (a lead's new
    phone, a conversation given to another lead) also invalidates what the old values keyed."""

    OBSERVED: tuple[str, ...] = ()

    objects = ObservedQuerySet.as_manager()

    class Meta:
        abstract = True

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = {n: getattr(instance, n) for n in cls.OBSERVED if n in field_names}
        return instance

    def loaded_values(self) -> dict:
        return getattr(self, "_loaded", {})


class Organization(Observed):
    name = models.CharField(max_length=200)
    address = models.CharField(max_length=300, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # {"mon": [["09:00", "18:00"]], ..., "sun": []}: opening intervals per weekday, local time.
    business_hours = models.JSONField(default=dict, blank=True)
    # Answered at once to every inbound text when set (TwiML <Message>); blank: no reply.
    sms_auto_reply = models.CharField(max_length=640, blank=True)
    # The answer to a HELP text; blank: a default naming STOP and START.
    sms_help_text = models.CharField(max_length=640, blank=True, db_default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PhoneNumber(Observed):
    """A number an organization answers on (the `To` of a text, the called number of a call)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="numbers")
    e164 = models.CharField("number", max_length=16, unique=True, validators=[_validate_phone])
    label = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.e164


class Lead(Observed):
    OBSERVED = ("id", "phone")

    class Status(models.TextChoices):
        NEW = "new"
        CONTACTED = "contacted"
        QUALIFIED = "qualified"
        HOT = "hot"
        CUSTOMER = "customer"
        LOST = "lost"

    class Sentiment(models.TextChoices):
        POSITIVE = "positive"
        NEUTRAL = "neutral"
        NEGATIVE = "negative"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="leads")
    phone = models.CharField(max_length=16, validators=[_validate_phone])
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    interest = models.JSONField(default=dict, blank=True)
    qualification = models.JSONField(default=dict, blank=True)
    sentiment = models.CharField(max_length=16, choices=Sentiment.choices, blank=True)
    last_contact_at = models.DateTimeField(null=True, blank=True)
    # Set by an opt-out keyword (STOP, ...), cleared by START/UNSTOP: no automatic text then.
    sms_opted_out_at = models.DateTimeField(null=True, blank=True)
    sms_opt_out_keyword = models.CharField(max_length=16, blank=True, db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "phone"], name="lead_unique_phone_per_org"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-last_contact_at"], name="lead_org_recent"),
            models.Index(fields=["organization", "status"], name="lead_org_status"),
            models.Index(fields=["-last_contact_at", "-id"], name="lead_recent"),
            models.Index(fields=["status"], name="lead_status"),
            models.Index(fields=["phone"], name="lead_phone"),
        ]

    def __str__(self) -> str:
        return f"{self.name or 'unknown'} ({self.phone})"


class Conversation(Observed):
    OBSERVED = ("lead_id",)

    class Channel(models.TextChoices):
        VOICE = "voice"
        SMS = "sms"

    class Status(models.TextChoices):
        INITIATED = "initiated"
        ACTIVE = "active"
        COMPLETED = "completed"
        FAILED = "failed"

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # The provider's id (ElevenLabs conversation_id, Twilio call SID): unique when present.
    provider_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    # The telephony call SID, known when the call starts (before the provider's own id).
    call_sid = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INITIATED)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    title = models.CharField(max_length=300, blank=True)
    summary = models.TextField(blank=True)
    classification = models.CharField(max_length=100, blank=True)
    analysis = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider_id"],
                condition=Q(provider_id__isnull=False),
                name="conversation_unique_provider_id",
            ),
            models.UniqueConstraint(
                fields=["call_sid"],
                condition=Q(call_sid__isnull=False),
                name="conversation_unique_call_sid",
            ),
        ]
        indexes = [
            models.Index(fields=["lead", "-started_at"], name="conversation_lead_recent"),
            models.Index(fields=["lead", "channel", "status"], name="conversation_lead_open"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.status} {self.started_at:%Y-%m-%d %H:%M}"


class Message(Observed):
    OBSERVED = ("lead_id",)

    class Role(models.TextChoices):
        CUSTOMER = "customer"
        AGENT = "agent"
        STAFF = "staff"
        SYSTEM = "system"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    body = models.TextField()
    # NULL, not "", when absent: the unique constraint applies only to real provider ids.
    provider_message_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    delivery_status = models.CharField(max_length=32, blank=True)
    delivery_error = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider_message_id"],
                condition=Q(provider_message_id__isnull=False),
                name="message_unique_provider_id",
            ),
        ]
        indexes = [
            models.Index(fields=["lead", "-created_at", "-id"], name="message_lead_recent"),
            models.Index(fields=["conversation", "created_at"], name="message_conversation"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.body[:40]}"


class WebhookEvent(models.Model):
    """Every provider delivery, keyed by the provider's own id: a retry finds its row and changes
    nothing; a delivery whose processing failed keeps its payload and error for replay."""

    class Provider(models.TextChoices):
        ELEVENLABS = "elevenlabs"
        TWILIO = "twilio"

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        FAILED = "failed"
        # Accepted and deliberately not acted on (an event type opsdash does not handle).
        IGNORED = "ignored"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_type = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    payload = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "idempotency_key"], name="webhook_event_unique_delivery"
            ),
        ]
        indexes = [models.Index(fields=["status", "received_at"], name="webhook_event_status")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.idempotency_key} ({self.status})"
