from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from monitoring.cache import gate


def dashboard(request: HttpRequest) -> dict:
    """The switch for the header of every dashboard page. Lazy: a page that does not show it
    (the admin's) does not read it."""
    return {"header_switch": SimpleLazyObject(gate.switch.current)}
