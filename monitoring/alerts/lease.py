"""A lease in the database: exactly one holder at a time, taken over once it lapses."""

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.models import Lease


def acquire(name: str, holder: str, seconds: float, now: datetime | None = None) -> bool:
    """Take or renew the lease; False while someone else holds it."""
    now = now or timezone.now()
    until = now + timedelta(seconds=seconds)
    renewed = Lease.objects.filter(Q(holder=holder) | Q(expires_at__lt=now), name=name).update(
        holder=holder, expires_at=until
    )
    if renewed:
        return True
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, expires_at=until)
    except IntegrityError:
        return False  # someone else holds it
    return True


def release(name: str, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).delete()


def current(name: str, now: datetime | None = None) -> Lease | None:
    """The live lease, or None when nobody holds it."""
    now = now or timezone.now()
    return Lease.objects.filter(name=name, expires_at__gte=now).first()
