"""Phone numbers to E.164 ("+15551234567"), the form every lookup and unique key uses."""

import re

from django.conf import settings

# ASCII digits only: str.isdigit and \d accept other scripts' digits, which E.164 does not.
_ALLOWED = re.compile(r"^\+?[0-9\s().\-/]+$", re.ASCII)
_EXTENSION = re.compile(r"\s*(?:ext\.?|x|#)\s*[0-9]+$", re.IGNORECASE)
# "+49 (0)30 ...": the national trunk prefix written after the country code, not dialled.
_TRUNK_IN_PARENTHESES = re.compile(r"^(\+[0-9]{1,3})\s*\(0\)")
MIN_DIGITS = 8  # country code + the shortest national numbers in use
MAX_DIGITS = 15  # the E.164 limit
# Longer input is refused before any pattern runs: no written phone number, formatting and
# extension included, comes near it, and the patterns' cost must stay bounded whatever comes in.
MAX_INPUT_LENGTH = 64


class InvalidPhoneNumber(ValueError):
    """The input is not a phone number; the message says why."""


def normalize_phone(raw: str, default_country_code: str | None = None) -> str:
    """E.164 for international ("+44 20 7946 0958", "0044 20 7946 0958") and national input
    ("(555) 123-4567", "1-555-123-4567" with the default country code 1). Raises
    InvalidPhoneNumber for anything else."""
    if not isinstance(raw, str):
        raise InvalidPhoneNumber("a phone number must be text")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidPhoneNumber(f"a phone number has at most {MAX_INPUT_LENGTH} characters")
    text = _EXTENSION.sub("", raw.strip())
    if not text:
        raise InvalidPhoneNumber("the phone number is empty")
    if not _ALLOWED.match(text) or "+" in text[1:]:
        raise InvalidPhoneNumber(f"{raw!r} contains characters a phone number cannot have")
    text = _TRUNK_IN_PARENTHESES.sub(r"\1", text)
    digits = re.sub(r"[^0-9]", "", text)
    if not digits:
        raise InvalidPhoneNumber(f"{raw!r} has no digits")
    country = (default_country_code or settings.PHONE_DEFAULT_COUNTRY_CODE).lstrip("+")
    if text.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    else:
        international = _national_to_international(raw, digits, country)
    if international.startswith("0"):
        raise InvalidPhoneNumber(f"{raw!r} has no valid country code")
    if not MIN_DIGITS <= len(international) <= MAX_DIGITS:
        raise InvalidPhoneNumber(
            f"{raw!r} has {len(international)} digits; "
            f"a full number has {MIN_DIGITS} to {MAX_DIGITS}"
        )
    return "+" + international


def _national_to_international(raw: str, digits: str, country: str) -> str:
    if country == "1":
        # North American numbering: ten digits, optionally after the trunk prefix 1.
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
        if len(digits) != 10 or digits[0] in "01":
            raise InvalidPhoneNumber(f"{raw!r} is not a valid North American number")
        return "1" + digits
    # Elsewhere a national number starts with the trunk prefix 0, which E.164 drops.
    return country + digits.removeprefix("0")


def is_valid_phone(raw: str) -> bool:
    try:
        normalize_phone(raw)
    except InvalidPhoneNumber:
        return False
    return True
