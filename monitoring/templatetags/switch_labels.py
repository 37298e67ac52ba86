"""`{{ state|switch_label }}`: the switch's label, as every page and command shows it."""

from django import template

from monitoring.cache import controls

register = template.Library()


@register.filter
def switch_label(state) -> str:
    return controls.state_label(state)
