from django import template

register = template.Library()


@register.filter
def percent(fraction, places: int = 1) -> str:
    """0.7234 → "72.3 %"; nothing measured → "—"."""
    if fraction is None or fraction == "":
        return "—"
    return f"{float(fraction) * 100:.{int(places)}f} %"


@register.filter
def milliseconds(value) -> str:
    return "—" if value is None else f"{value:g} ms"


@register.filter
def megabytes(n) -> str:
    return "—" if n is None else f"{n / 1048576:.1f} MB"


@register.filter
def verdict(met) -> str:
    return {True: "met", False: "missed"}.get(met, "not judged")


@register.filter
def thousands(n) -> str:
    return "—" if n is None else f"{n:,}"
