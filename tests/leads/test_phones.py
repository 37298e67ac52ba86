"""normalize_phone: every accepted spelling becomes one E.164 string; anything else is refused
with a message that says what is wrong."""

import re

import pytest
from django.test import override_settings

from leads.phones import InvalidPhoneNumber, is_valid_phone, normalize_phone

E164 = re.compile(r"\+[0-9]{8,15}")


@pytest.mark.parametrize(
    "raw",
    [
        "(555) 123-4567",
        "555.123.4567",
        "555-123-4567",
        "555/123/4567",
        "1-555-123-4567",
        "1 (555) 123-4567",
        "5551234567",
        "15551234567",
        "  555 123 4567\n",
    ],
)
def test_it_normalizes_national_north_american_formats(raw):
    assert normalize_phone(raw) == "+15551234567"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 555 123 4567", "+15551234567"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("+15551234567", "+15551234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("00 1 555 123 4567", "+15551234567"),
        ("+33 1 23 45 67 89", "+33123456789"),
        # The shortest and the longest numbers E.164 allows.
        ("+12345678", "+12345678"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_it_normalizes_international_formats(raw, expected):
    assert normalize_phone(raw) == expected


def test_it_drops_the_trunk_zero_written_in_parentheses_after_a_country_code():
    assert normalize_phone("+49 (0)30 1234567") == "+49301234567"
    assert normalize_phone("+44(0)20 7946 0958") == "+442079460958"


def test_it_accepts_a_default_country_code_written_with_a_plus():
    assert normalize_phone("020 7946 0958", "+44") == "+442079460958"


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("020 7946 0958", "44", "+442079460958"),
        ("20 7946 0958", "44", "+442079460958"),
        ("0044 20 7946 0958", "44", "+442079460958"),
        ("+1 555 123 4567", "44", "+15551234567"),
        # Outside North America the NANP rules do not apply: ten digits are just digits.
        ("(555) 123-4567", "44", "+445551234567"),
        ("030 1234567", "49", "+49301234567"),
    ],
)
def test_it_uses_an_explicit_default_country_code(raw, country, expected):
    assert normalize_phone(raw, country) == expected


@override_settings(PHONE_DEFAULT_COUNTRY_CODE="44")
def test_it_uses_the_configured_default_country_code():
    assert normalize_phone("020 7946 0958") == "+442079460958"
    assert normalize_phone("555 123 4567", "1") == "+15551234567"


@pytest.mark.parametrize(
    "raw",
    [
        "555-123-4567 ext 12",
        "555-123-4567 ext. 12",
        "555-123-4567 EXT 12",
        "555-123-4567 x12",
        "555-123-4567x 12",
        "555-123-4567 #12",
        "+1 555 123 4567 ext 9",
    ],
)
def test_it_strips_extensions(raw):
    assert normalize_phone(raw) == "+15551234567"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "the phone number is empty"),
        ("   ", "the phone number is empty"),
        ("\t\n", "the phone number is empty"),
        ("ext 12", "the phone number is empty"),
        ("abc", "'abc' contains characters a phone number cannot have"),
        ("555-CALL-NOW", "'555-CALL-NOW' contains characters a phone number cannot have"),
        ("++15551234567", "'++15551234567' contains characters a phone number cannot have"),
        ("+1 555+123 4567", "'+1 555+123 4567' contains characters a phone number cannot have"),
        ("+", "'+' contains characters a phone number cannot have"),
        ("555_123_4567", "'555_123_4567' contains characters a phone number cannot have"),
        ("+1 555", "'+1 555' has 4 digits; a full number has 8 to 15"),
        ("+1234567", "'+1234567' has 7 digits; a full number has 8 to 15"),
        ("+1234567890123456", "'+1234567890123456' has 16 digits; a full number has 8 to 15"),
        ("00 1234 5678 9012 3456", "has 16 digits; a full number has 8 to 15"),
        ("+0 555 123 4567", "'+0 555 123 4567' has no valid country code"),
        ("000 555 123 4567", "'000 555 123 4567' has no valid country code"),
        # North American numbers: ten digits, and the area code cannot start with 0 or 1.
        ("055-123-4567", "'055-123-4567' is not a valid North American number"),
        ("155-123-4567", "'155-123-4567' is not a valid North American number"),
        ("1-055-123-4567", "'1-055-123-4567' is not a valid North American number"),
        ("1-155-123-4567", "'1-155-123-4567' is not a valid North American number"),
        ("123-4567", "'123-4567' is not a valid North American number"),
        ("1234567890123456", "'1234567890123456' is not a valid North American number"),
    ],
)
def test_it_rejects_junk_with_a_message_naming_the_problem(raw, message):
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        normalize_phone(raw)
    assert message in str(excinfo.value)
    assert is_valid_phone(raw) is False


@pytest.mark.parametrize("raw", [None, 5551234567, 15551234567.0, b"+15551234567"])
def test_it_rejects_anything_but_text(raw):
    with pytest.raises(InvalidPhoneNumber, match="^a phone number must be text$"):
        normalize_phone(raw)


def test_it_rejects_too_short_numbers_for_an_explicit_country():
    with pytest.raises(
        InvalidPhoneNumber, match=r"^'123' has 5 digits; a full number has 8 to 15$"
    ):
        normalize_phone("123", "44")


def test_it_is_a_value_error_so_generic_callers_can_catch_it():
    assert issubclass(InvalidPhoneNumber, ValueError)


@pytest.mark.parametrize("raw", ["+15551234567", "(555) 123-4567", "0044 20 7946 0958"])
def test_it_says_a_valid_number_is_valid(raw):
    assert is_valid_phone(raw) is True


@pytest.mark.parametrize(
    "raw", ["٥٥٥١٢٣٤٥٦٧", "５５５１２３４５６７"], ids=["arabic-indic", "full-width"]
)
def test_it_never_returns_non_ascii_digits(raw):
    try:
        result = normalize_phone(raw)
    except InvalidPhoneNumber:
        return
    assert E164.fullmatch(result), result


def test_it_names_the_input_when_it_has_no_digits():
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        normalize_phone("---")
    assert "'---'" in str(excinfo.value)
