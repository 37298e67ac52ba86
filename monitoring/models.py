from django.db import models


class CacheSwitch(models.Model):
    """The runtime REDIS_ENABLED switch: one row (pk=1). Its truth lives here, never in Redis,
    so it can be flipped while Redis is broken."""

    SINGLETON_ID = 1

    enabled = models.BooleanField(default=True)
    # Prefix of every cache key; bumping it makes every older entry unreachable at once.
    generation = models.PositiveBigIntegerField(default=1)
    # Set by a write made while caching was pinned off or unconfigured (it invalidated nothing):
    # the next process that caches bumps the generation first, so no entry older than that
    # write is served.
    invalidations_skipped = models.BooleanField(default=False)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "cache switch"
        verbose_name_plural = "cache switch"

    def __str__(self) -> str:
        return f"caching {'on' if self.enabled else 'off'} (generation {self.generation})"


class SwitchAudit(models.Model):
    """One row per request to change the switch or flush the cache: who, when, what, why."""

    class Action(models.TextChoices):
        ENABLE = "enable", "turn caching on"
        DISABLE = "disable", "turn caching off"
        FLUSH = "flush", "flush (bump generation)"
        RECOVER = "recover", "Redis recovered (bump generation)"
        LOST = "lost", "invalidation lost (bump generation)"
        UNPINNED = "unpinned", "caching resumed after writes while pinned off (bump generation)"

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
