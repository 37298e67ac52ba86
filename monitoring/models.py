from django.db import models


class CacheSwitch(models.Model):
    """The runtime REDIS_ENABLED switch: one row (pk=1). Its truth lives here, never in Redis,
    so it can be flipped while Redis is broken."""

    SINGLETON_ID = 1

    enabled = models.BooleanField(default=True)
    # Prefix of every cache key; bumping it makes every older entry unreachable at once.
    generation = models.PositiveBigIntegerField(default=1)
    # Set by a write that could not invalidate (caching pinned off or unconfigured here, or the
    # circuit breaker open): the next process that caches bumps the generation first, so no
    # entry older than that write is served.
    invalidations_skipped = models.BooleanField(default=False)
    # The Redis server (its run id) the current generation is used on, since when, and the
    # marker planted there for the generation (see monitoring.cache.gate: a server that is not
    # this one, or that lost the marker, gets a new generation before anything is read).
    server_id = models.CharField(max_length=64, blank=True)
    server_since = models.DateTimeField(null=True, blank=True)
    marker = models.CharField(max_length=64, blank=True)
    marked_generation = models.PositiveBigIntegerField(default=0)
    # When a lost marker last started a new generation (a server that keeps losing it, evicting
    # under memory pressure, gets it planted again instead, within the settling time).
    marker_reset_at = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "cache switch"
        verbose_name_plural = "cache switch"
        permissions = [
            ("flip_cacheswitch", "Can turn Redis caching on or off and flush the cache"),
        ]

    def __str__(self) -> str:
        return f"caching {'on' if self.enabled else 'off'} (generation {self.generation})"


class SwitchAudit(models.Model):
    """One row per request to change the switch or flush the cache: who, when, what, why."""

    class Action(models.TextChoices):
        ENABLE = "enable", "turn caching on"
        DISABLE = "disable", "turn caching off"
        FLUSH = "flush", "flush (bump generation)"
        LOST = "lost", "invalidation lost (bump generation)"
        SKIPPED = "skipped", "writes skipped their invalidations (bump generation)"
        RESET = "reset", "Redis lost or replaced its data (bump generation)"

    class Source(models.TextChoices):
        DASHBOARD = "dashboard"
        CLI = "cli"
        ADMIN = "admin"
        API = "api"
        SYSTEM = "system"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    old_enabled = models.BooleanField()
    new_enabled = models.BooleanField()
    generation = models.PositiveBigIntegerField()
    reason = models.CharField(max_length=500)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor}: {self.action} ({self.reason})"


class Writer(models.Model):
    """A process that may owe invalidations: alive while it beats (monitoring.cache.writers)."""

    process = models.CharField(max_length=100, primary_key=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.process} at {self.beat_at:%H:%M:%S}"


class MetricWindow(models.Model):
    """A few seconds of one process's request and cache figures (see monitoring.metrics)."""

    process = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(db_index=True)
    data = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["process", "-ended_at"], name="metric_window_process")]

    def __str__(self) -> str:
        return f"{self.process} {self.started_at:%H:%M:%S}-{self.ended_at:%H:%M:%S}"


class MetricBaseline(models.Model):
    """What every deleted metric window counted, as integer totals (see
    monitoring.metrics.totals): /metrics adds it to the windows still stored, so a counter there
    never goes down when old windows are pruned. One row; it only ever grows."""

    name = models.CharField(max_length=20, primary_key=True)
    totals = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} (updated {self.updated_at:%Y-%m-%d %H:%M:%S})"


class Lease(models.Model):
    """Who runs a one-per-deployment job (the alert evaluator) until when."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} until {self.expires_at:%H:%M:%S}"


class Incident(models.Model):
    """Alerts that overlap in time: opened with the first alert while none is open, closed when
    its last open alert resolves. Its page tells the whole story as one timeline."""

    opened_at = models.DateTimeField(db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    title = models.CharField(max_length=300)

    class Meta:
        ordering = ["-opened_at", "-id"]

    def __str__(self) -> str:
        return f"incident #{self.pk}: {self.title}"


class Alert(models.Model):
    class Severity(models.TextChoices):
        WARNING = "warning"
        CRITICAL = "critical"

    class State(models.TextChoices):
        PENDING = "pending"
        FIRING = "firing"
        RESOLVED = "resolved"

    rule = models.CharField(max_length=64)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    state = models.CharField(max_length=16, choices=State.choices)
    summary = models.CharField(max_length=300)
    value = models.FloatField(null=True)
    threshold = models.FloatField()
    started_at = models.DateTimeField()
    # Since when the condition has held without a break: the `for` clock of a pending alert.
    breaching_since = models.DateTimeField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledgement_note = models.CharField(max_length=500, blank=True)
    incident = models.ForeignKey(
        Incident, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # One open (pending or firing) alert per rule, whatever the races.
            models.UniqueConstraint(
                fields=["rule"],
                condition=models.Q(state__in=["pending", "firing"]),
                name="alert_one_open_per_rule",
            ),
        ]
        indexes = [models.Index(fields=["state", "severity"], name="alert_state_severity")]

    def __str__(self) -> str:
        return f"{self.severity} {self.rule} ({self.state})"


class AlertTransition(models.Model):
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="transitions")
    at = models.DateTimeField()
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16)
    value = models.FloatField(null=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.alert.rule}: {self.from_state or '-'} -> {self.to_state}"


class Notification(models.Model):
    """The outbox: one message to one channel about an alert transition, written by the
    evaluator and sent by the delivery worker (monitoring.alerts.delivery), retried with backoff
    until it is sent or given up on."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        # Given up: the channel refused for good, or every attempt failed.
        FAILED = "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16)
    event = models.CharField(max_length=16)
    # The transition's value, as it was when the message was written.
    value = models.FloatField(null=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField()
    # A worker that took the row sends it until then; after that another may (it died).
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "due_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} of alert {self.alert_id}: {self.status}"


class NotificationDelivery(models.Model):
    """One attempt to tell a channel about an alert transition (or a test message)."""

    class Status(models.TextChoices):
        SENT = "sent"
        FAILED = "failed"
        # A permanent error: the channel refused for good; no more retries of this message.
        REJECTED = "rejected"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, null=True, related_name="deliveries")
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, null=True, related_name="deliveries"
    )
    channel = models.CharField(max_length=16)
    event = models.CharField(max_length=16)
    attempt = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} #{self.attempt}: {self.status}"


class Silence(models.Model):
    """A time during which an alert rule (or every rule) tells nobody and triggers no automatic
    rollback; its alerts still open, fire and are recorded. Weekly silences repeat their
    window every seven days from `starts_at` until cancelled. Rows are never deleted: with who
    created and who cancelled them, they are the silences' audit."""

    rule = models.CharField(max_length=64, blank=True)  # blank: every rule
    reason = models.CharField(max_length=500)
    owner = models.CharField(max_length=150)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    weekly = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-starts_at", "-id"]

    def __str__(self) -> str:
        return f"silence #{self.pk} of {self.rule or 'every rule'}: {self.reason}"


class IncidentNote(models.Model):
    """What a person wrote on an incident's timeline."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notes")
    at = models.DateTimeField(auto_now_add=True)
    author = models.CharField(max_length=150)
    text = models.CharField(max_length=2000)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.author} on incident #{self.incident_id}: {self.text[:50]}"


class ProcessEvent(models.Model):
    """An app or monitor process starting or exiting: the deploys and restarts on timelines
    and charts."""

    class Kind(models.TextChoices):
        START = "start"
        EXIT = "exit"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    process = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    role = models.CharField(max_length=16)  # "app" or "monitor"

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.role} {self.process} {self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class MetricRollup(models.Model):
    """Every process's windows merged into one row per minute, and minutes into hours
    (see monitoring.metrics.rollups): the history kept for weeks after the windows are gone."""

    class Resolution(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"

    resolution = models.CharField(max_length=8, choices=Resolution.choices)
    started_at = models.DateTimeField()
    data = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["resolution", "started_at"], name="metric_rollup_one_per_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resolution} {self.started_at:%Y-%m-%d %H:%M}"


class RollupMark(models.Model):
    """How far one resolution is rolled up: every bucket before `rolled_up_to` is written, so
    a bucket is never added twice."""

    resolution = models.CharField(max_length=8, primary_key=True)
    rolled_up_to = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.resolution} rolled up to {self.rolled_up_to}"
