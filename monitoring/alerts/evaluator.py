"""The evaluator: one per deployment (a lease), every few seconds it samples Redis, reads the
deployment's figures, evaluates the rules, keeps the transitions (with the notifications they
owe, which the delivery worker sends), and pushes a snapshot to the dashboards."""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from monitoring import events
from monitoring.alerts import engine, lease, rollback
from monitoring.alerts.rules import Sample, default_rules
from monitoring.cache import gate, writers
from monitoring.identity import PROCESS_ID
from monitoring.metrics import store
from monitoring.metrics.aggregate import aggregate

log = logging.getLogger(__name__)
LEASE = "evaluator"


def take_sample() -> Sample:
    state = gate.switch.current()
    return Sample(
        caching_enabled=state.enabled,
        redis=gate.sample_server()
        if state.enabled
        else {"configured": state.source != "unconfigured"},
        minute=aggregate(60),
        five_minutes=aggregate(300),
        extra={"switch": state.as_dict(), "breaker": gate.breaker.state},
    )


def evaluate_once(now=None) -> tuple[Sample, list[engine.Transition]]:
    now = now or timezone.now()
    writers.sweep()
    sample = take_sample()
    transitions = engine.evaluate(default_rules(), sample, now)
    if sample.redis.get("configured"):
        store.note_server_sample(server_point(sample.redis, now))
    for transition in transitions:
        events.publish("alert.transition", transition_event(transition))
    rollback.consider(now)
    events.publish("monitoring.snapshot", snapshot(sample.minute, sample.redis))
    return sample, transitions


def server_point(redis: dict, now) -> dict:
    """What the charts keep of a Redis sample."""
    return {
        "at": now.timestamp(),
        # Whether Redis was checked at all (not while caching is off): only then is "not
        # connected" an outage, in the uptime the review reports.
        "checked": "connected" in redis,
        "connected": bool(redis.get("connected")),
        "latency_ms": redis.get("latency_ms"),
        "used_memory_bytes": redis.get("used_memory_bytes"),
        "max_memory_bytes": redis.get("max_memory_bytes"),
    }


def transition_event(transition: engine.Transition) -> dict:
    alert = transition.alert
    return {
        "id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity,
        "summary": alert.summary,
        "from": transition.from_state,
        "to": transition.to_state,
        "value": transition.value,
    }


def snapshot(minute: dict, redis: dict | None = None) -> dict:
    """What live dashboards and the event stream show: the switch, this process's breaker, the
    last minute's figures across every process, and the Redis sample when there is one."""
    body = {
        "at": timezone.now().isoformat(),
        "switch": gate.switch.current().as_dict(),
        "breaker": gate.breaker.state,
        "minute": {key: minute[key] for key in ("overall", "cache", "route_groups", "processes")},
    }
    if redis is not None:
        body["redis"] = redis
    return body


class Evaluator(threading.Thread):
    """Runs `evaluate_once` while holding the lease; any process may run one."""

    def __init__(self, holder: str = PROCESS_ID) -> None:
        super().__init__(name="opsdash-evaluator", daemon=True)
        self.holder = holder
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(settings.MONITORING_EVALUATE_SECONDS):
            self.round()

    def round(self) -> bool:
        try:
            if not lease.acquire(LEASE, self.holder, settings.MONITORING_LEASE_SECONDS):
                return False
            evaluate_once()
            return True
        except DatabaseError:
            log.warning("evaluator: database unreachable, round skipped")
            return False
        except Exception:  # the loop must outlive any one round's bug: logged, next round runs
            log.exception("evaluator: round failed")
            return False
        finally:
            close_old_connections()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(settings.MONITORING_LEASE_SECONDS)  # a round in progress would renew it
        try:
            lease.release(LEASE, self.holder)
        except DatabaseError:
            pass
