"""`{{ state|switch_label }}`: the switch's label, as every page and command shows it; and
`state|rolled_back`, whether the automatic rollback turned caching off."""

from django import template

from monitoring.alerts import rollback
from monitoring.cache import controls

register = template.Library()


@register.filter
def switch_label(state) -> str:
    return controls.state_label(state)


@register.filter
def rolled_back(state) -> bool:
    """`{% if state|rolled_back %}`: caching is off because the automatic rollback did it."""
    return rollback.rolled_back_by_system(state)
