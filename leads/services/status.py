"""Which way a lead's status may move when a provider reports one: forward only."""

from leads.models import Lead

S = Lead.Status
PROGRESS = [S.NEW, S.CONTACTED, S.QUALIFIED, S.HOT, S.CUSTOMER]


def advance_status(current: str, proposed: str | None) -> str:
    """The status after a provider proposes one: never a step back (a hot lead stays hot when a
    later call collected less); "lost" only for a lead that never got past contacted."""
    if proposed == S.LOST:
        return S.LOST if current in (S.NEW, S.CONTACTED) else current
    if proposed not in PROGRESS or current == S.LOST:
        return current
    return proposed if PROGRESS.index(proposed) > PROGRESS.index(current) else current
