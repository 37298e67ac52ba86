"""Small builders for test data, with fixed timestamps so answers are comparable across runs."""

from datetime import UTC, datetime, timedelta

from leads.models import Organization, PhoneNumber

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
ORG_NUMBER = "+15550000001"
CALLER = "+15551230001"


def make_org(
    name: str = "Pedal Bikes", number: str = ORG_NUMBER, *more_numbers: str
) -> Organization:
    org = Organization.objects.create(
        name=name,
        address="1 Main St, Springfield",
        timezone="America/New_York",
        business_hours={"mon": [["09:00", "18:00"]], "sun": []},
    )
    for e164 in (number, *more_numbers):
        PhoneNumber.objects.create(organization=org, e164=e164)
    return org


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)
