"""Silences: their windows (one-off and weekly), what they hold back (the notifications of the
alerts they cover, not the alerts), and the three ways to manage them: `manage.py silence`,
the API and the dashboard, each refusing bad input with a clear message."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.utils import timezone

from monitoring.alerts import silences
from monitoring.models import Alert, Notification, Silence
from tests.monitoring.notification_support import T0, channel_settings, fire, resolve
from tests.personas import flipper, signed_in, viewer

pytestmark = pytest.mark.django_db

TOKEN = "silence-test-token"


@pytest.fixture(autouse=True)
def channels():
    with channel_settings(), override_settings(MONITORING_TOKEN=TOKEN):
        yield


def silence(**fields) -> Silence:
    values = {
        "rule": "redis_connection_lost",
        "reason": "Redis upgrade",
        "owner": "olivia",
        "starts_at": T0 - timedelta(minutes=10),
        "ends_at": T0 + timedelta(hours=1),
        "created_by": "olivia",
    }
    return Silence.objects.create(**{**values, **fields})


# --- windows -------------------------------------------------------------------------------


def test_it_covers_its_rule_inside_its_window_only():
    quiet = silence()
    assert silences.covering("redis_connection_lost", T0) == quiet
    assert silences.covering("cache_hit_rate_critical", T0) is None
    assert silences.covering("redis_connection_lost", T0 - timedelta(minutes=11)) is None
    assert silences.covering("redis_connection_lost", T0 + timedelta(hours=1)) is None


def test_it_covers_every_rule_when_it_names_none():
    everything = silence(rule="")
    assert silences.covering("cache_hit_rate_critical", T0) == everything


def test_it_repeats_a_weekly_window_every_seven_days():
    sunday_night = silence(
        starts_at=datetime(2026, 3, 1, 2, 0, tzinfo=UTC),
        ends_at=datetime(2026, 3, 1, 4, 0, tzinfo=UTC),
        weekly=True,
    )
    three_weeks_on = datetime(2026, 3, 22, 3, 0, tzinfo=UTC)
    assert silences.window_at(sunday_night, three_weeks_on) == (
        datetime(2026, 3, 22, 2, 0, tzinfo=UTC),
        datetime(2026, 3, 22, 4, 0, tzinfo=UTC),
    )
    assert silences.covering("redis_connection_lost", three_weeks_on) == sunday_night
    assert (
        silences.covering("redis_connection_lost", datetime(2026, 3, 22, 4, 0, tzinfo=UTC)) is None
    )
    assert silences.next_window(sunday_night, datetime(2026, 3, 23, tzinfo=UTC)) == (
        datetime(2026, 3, 29, 2, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 4, 0, tzinfo=UTC),
    )


def test_it_stops_covering_once_cancelled():
    quiet = silence()
    quiet.cancelled_at, quiet.cancelled_by = T0, "sam"
    quiet.save()
    assert silences.covering("redis_connection_lost", T0 - timedelta(seconds=1)) == quiet
    assert silences.covering("redis_connection_lost", T0) is None


# --- what a silence holds back -------------------------------------------------------------


def test_it_records_a_silenced_alert_but_writes_no_notification():
    quiet = silence()
    fired = fire()
    assert fired.alert.state == "firing"
    assert Notification.objects.count() == 0
    note = fired.alert.transitions.get(to_state="firing").note
    assert note == f"notifications silenced by silence #{quiet.pk} (Redis upgrade)"


def test_it_does_not_tell_the_resolve_of_a_firing_it_kept_quiet():
    silence(ends_at=T0 + timedelta(minutes=1))
    fire()
    resolve(T0 + timedelta(minutes=5))  # after the silence ended
    assert Notification.objects.count() == 0
    assert Alert.objects.get().state == "resolved"


def test_it_tells_again_once_the_silence_is_over():
    silence(ends_at=T0 + timedelta(minutes=1))
    fire()
    resolve(T0 + timedelta(minutes=5))
    fire(T0 + timedelta(minutes=10))
    assert sorted(Notification.objects.values_list("channel", "event")) == [
        ("email", "firing"),
        ("slack", "firing"),
    ]


def test_it_refuses_a_silence_without_a_reason_an_unknown_rule_or_a_backwards_window():
    now = timezone.now()
    ok = {
        "rule": "",
        "reason": "x",
        "owner": "o",
        "starts_at": now,
        "ends_at": now + timedelta(hours=1),
    }
    cases = [
        ({"reason": "  "}, "a silence needs a reason"),
        ({"rule": "no_such_rule"}, "no rule 'no_such_rule'; the rules are "),
        ({"ends_at": now}, "a silence must end after it starts"),
        ({"ends_at": now + timedelta(days=32)}, "a silence lasts at most 31 days"),
        (
            {"starts_at": now - timedelta(hours=2), "ends_at": now - timedelta(hours=1)},
            "that silence would already be over",
        ),
    ]
    for change, message in cases:
        with pytest.raises(silences.Invalid) as refused:
            silences.create(**{**ok, **change}, actor="t")
        assert str(refused.value).startswith(message)
    assert Silence.objects.count() == 0


# --- manage.py silence ---------------------------------------------------------------------


def command(*args: str) -> str:
    out = StringIO()
    call_command("silence", *args, stdout=out)
    return out.getvalue()


def test_it_adds_lists_and_cancels_from_the_command_line():
    out = command("add", "--all", "--reason", "datacentre move", "--for", "2h", "--actor", "ops")
    made = Silence.objects.get()
    assert out.startswith(f"silence #{made.pk}: every rule, ")
    assert (made.rule, made.created_by, made.owner) == ("", "ops", "ops")
    assert made.ends_at - made.starts_at == timedelta(hours=2)
    listed = command("list")
    assert listed.startswith(f"#{made.pk} in force ")
    assert "datacentre move (owner ops)" in listed
    assert command("cancel", str(made.pk), "--actor", "sam") == f"silence #{made.pk} ended by sam\n"
    assert command("list") == "no silence in force or to come\n"
    made.refresh_from_db()
    assert made.cancelled_by == "sam"


def test_it_schedules_a_weekly_window_from_the_command_line():
    command(
        "add",
        "--rule",
        "redis_connection_lost",
        "--reason",
        "backups",
        "--start",
        "2030-01-06T02:00Z",
        "--end",
        "2030-01-06T03:30Z",
        "--weekly",
    )
    made = Silence.objects.get()
    assert (made.weekly, made.starts_at) == (True, datetime(2030, 1, 6, 2, 0, tzinfo=UTC))
    assert command("list").startswith(f"#{made.pk} from 2030-01-06 02:00 to 2030-01-06 03:30 UTC")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rule", "nope", "--for", "1h"], "no silence created: no rule 'nope'"),
        (["--all", "--for", "forever"], "'forever' is not a duration"),
        (["--all", "--end", "tomorrow"], "--end 'tomorrow' is not an ISO 8601 time"),
    ],
)
def test_it_refuses_bad_input_on_the_command_line(args, message):
    with pytest.raises(CommandError, match=f"^{message}"):
        command("add", "--reason", "r", *args)
    assert Silence.objects.count() == 0


def test_it_says_which_silence_it_cannot_cancel():
    with pytest.raises(CommandError, match="^no silence #99$"):
        command("cancel", "99")


# --- the API -------------------------------------------------------------------------------


def api(method: str, path: str, body=None, token: str | None = TOKEN, client=None):
    client = client or Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
    call = getattr(client, method)
    if method == "get":
        return call(f"/api/monitoring/{path}", **headers)
    return call(f"/api/monitoring/{path}", data, content_type="application/json", **headers)


def test_it_creates_lists_and_cancels_through_the_api():
    made = api("post", "silences", {"rule": None, "reason": "deploy", "duration": "30m"})
    assert made.status_code == 201
    body = made.json()
    assert (body["rule"], body["reason"], body["in_force"], body["created_by"]) == (
        None,
        "deploy",
        True,
        "api token",
    )
    listed = api("get", "silences").json()["silences"]
    assert [s["id"] for s in listed] == [body["id"]]
    ended = api("post", f"silences/{body['id']}/cancel")
    assert (ended.status_code, ended.json()["cancelled_by"]) == (200, "api token")
    assert api("get", "silences").json() == {"silences": []}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"reason": "x"}, 'give ends_at or duration (e.g. "2h")'),
        (
            {"reason": "x", "duration": "2h", "ends_at": "2030-01-01T00:00Z"},
            "give ends_at or duration, not both",
        ),
        (
            {"reason": "x", "ends_at": "2030-01-01T00:00"},
            "ends_at must be an ISO 8601 time with its offset",
        ),
        ({"reason": "", "duration": "1h"}, "a silence needs a reason"),
        (
            {"reason": "x", "duration": "1h", "rule": 7},
            "rule must be a rule name, or null for every rule",
        ),
        ({"reason": "x", "duration": "-1h"}, "'-1h' is not a duration"),
        ("[1, 2]", "the body must be a JSON object"),
        ("{not json", "Expecting property name enclosed in double quotes"),
    ],
)
def test_it_answers_400_to_a_bad_silence(body, error):
    response = api("post", "silences", body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert Silence.objects.count() == 0


def test_it_needs_the_token_or_the_switch_permission_to_change_silences():
    assert api("post", "silences", {"reason": "x", "duration": "1h"}, token=None).status_code == 401
    sam = signed_in(viewer())
    refused = api("post", "silences", {"reason": "x", "duration": "1h"}, token=None, client=sam)
    assert (refused.status_code, refused.json()) == (
        403,
        {"error": "needs the permission to flip the cache switch"},
    )
    assert api("get", "silences", token=None, client=sam).status_code == 200
    assert api("post", "silences/99/cancel").status_code == 404
    assert Silence.objects.count() == 0


# --- the dashboard -------------------------------------------------------------------------


def test_it_creates_and_ends_a_silence_from_the_dashboard():
    olivia = signed_in(flipper())
    form = {"rule": "redis_connection_lost", "reason": "failover drill", "duration": "45m"}
    response = olivia.post("/dashboard/silences/add", form)
    assert (response.status_code, response["Location"]) == (302, "/dashboard/silences/")
    made = Silence.objects.get()
    assert (made.owner, made.created_by, made.ends_at - made.starts_at) == (
        "olivia",
        "olivia",
        timedelta(minutes=45),
    )
    page = olivia.get("/dashboard/silences/").content.decode()
    assert "failover drill" in page and "End now" in page
    overview_alerts = olivia.get("/dashboard/fragments/alerts").content.decode()
    assert "Silenced until " in overview_alerts
    assert "redis_connection_lost (failover drill, olivia)" in overview_alerts
    assert olivia.post(f"/dashboard/silences/{made.pk}/cancel").status_code == 302
    made.refresh_from_db()
    assert made.cancelled_by == "olivia"
    assert "Silenced until " not in olivia.get("/dashboard/fragments/alerts").content.decode()


def test_it_shows_the_form_again_with_the_error_for_a_bad_silence():
    olivia = signed_in(flipper())
    response = olivia.post(
        "/dashboard/silences/add", {"rule": "", "reason": "x", "duration": "soon"}
    )
    assert response.status_code == 400
    assert "&#x27;soon&#x27; is not a duration" in response.content.decode()
    assert Silence.objects.count() == 0


def test_it_lets_a_viewer_see_silences_but_not_change_them():
    silence(ends_at=timezone.now() + timedelta(hours=1))
    sam = signed_in(viewer())
    page = sam.get("/dashboard/silences/").content.decode()
    assert "Redis upgrade" in page and "End now" not in page
    assert sam.post("/dashboard/silences/add", {"reason": "x", "duration": "1h"}).status_code == 403
    assert Silence.objects.count() == 1


def test_it_says_on_the_alerts_page_that_a_silence_covers_it():
    quiet = silence(
        starts_at=timezone.now() - timedelta(minutes=1), ends_at=timezone.now() + timedelta(hours=1)
    )
    alert = fire(timezone.now()).alert
    page = signed_in(viewer()).get(f"/dashboard/alerts/{alert.pk}/").content.decode()
    assert f"silence #{quiet.pk}</a> until" in page
    assert "notifications silenced by silence #" in page
