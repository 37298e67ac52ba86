"""SMS consent: Twilio's opt-out, opt-in and help keywords, recognized on an inbound text whose
whole body is the keyword (any case, surrounding spaces and punctuation ignored), as Twilio's
own opt-out handling reads them."""

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP"})
HELP = frozenset({"HELP"})
DEFAULT_HELP = "Reply STOP to stop texts from us, START to receive them again."


def keyword(body: str) -> tuple[str, str] | None:
    """("opt_out" | "opt_in" | "help", the keyword), or None for an ordinary text."""
    word = (body or "").strip().strip(".!?,;:").strip().upper()
    for kind, words in (("opt_out", OPT_OUT), ("opt_in", OPT_IN), ("help", HELP)):
        if word in words:
            return kind, word
    return None


def help_text(org: dict) -> str:
    return org.get("sms_help_text") or DEFAULT_HELP
