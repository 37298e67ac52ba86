from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from monitoring.cache import controls, gate


def dashboard(request: HttpRequest) -> dict:
    """The switch for the header of every dashboard page (its badge, and the banner of an
    automatic rollback), and whether this user may flip it. Lazy: a page that does not show
    them (the admin's) does not read them."""
    return {
        "header_switch": SimpleLazyObject(gate.switch.current),
        "header_may_flip": SimpleLazyObject(lambda: controls.may_flip(request.user)),
    }
