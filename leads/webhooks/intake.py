"""HTTP plumbing shared by the webhooks: method, size, content type, body parsing, and the
clear 4xx every kind of bad input gets (never a 500, never a stack trace)."""

import functools
import inspect
import json
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger(__name__)


class Rejected(Exception):
    """Bad input: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def webhook(view):
    """CSRF-exempt, POST only (405 otherwise), with Rejected turned into its 4xx answer.
    Works for sync and async views."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            refused = _refuse_method(request)
            if refused:
                return refused
            try:
                return await view(request, *args, **kwargs)
            except Rejected as exc:
                return _answer_rejection(request, exc)

    else:

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            refused = _refuse_method(request)
            if refused:
                return refused
            try:
                return view(request, *args, **kwargs)
            except Rejected as exc:
                return _answer_rejection(request, exc)

    return csrf_exempt(wrapper)


def _refuse_method(request: HttpRequest):
    if request.method == "POST":
        return None
    response = error_response(405, f"{request.method} is not allowed here; use POST")
    response["Allow"] = "POST"
    return response


def _answer_rejection(request: HttpRequest, exc: Rejected) -> JsonResponse:
    log.info("webhook %s rejected: %s %s", request.path, exc.status, exc.message)
    return error_response(exc.status, exc.message)


def read_body(request: HttpRequest) -> bytes:
    """The raw body, refused with 413 past WEBHOOK_MAX_BODY_BYTES."""
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body over the {limit}-byte limit")
    try:
        body = request.body
    except RequestDataTooBig:
        raise Rejected(413, f"body over the {limit}-byte limit") from None
    if len(body) > limit:
        raise Rejected(413, f"body over the {limit}-byte limit")
    return body


def require_content_type(request: HttpRequest, expected: str) -> None:
    actual = (request.content_type or "").lower()
    if actual != expected:
        raise Rejected(415, f"content type must be {expected}, not {actual or 'missing'}")


# Deeper JSON than any provider sends is refused before anything walks it recursively.
MAX_JSON_DEPTH = 64


class TooDeep(Rejected):
    """A JSON body nested deeper than MAX_JSON_DEPTH."""


def parse_json_object(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except RecursionError:
        raise TooDeep(400, f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Rejected(400, "body must be a JSON object")
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise TooDeep(400, f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    return without_nul(data)


def without_nul(value):
    """`value` with every NUL character in its strings (keys included) replaced by U+FFFD:
    PostgreSQL stores no NUL in text or jsonb, and a delivery must not be refused (and retried
    for ever) or lost for one."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def _depth_exceeds(data, limit: int) -> bool:
    """Iterative (a recursive walk is what deep input breaks)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def require_fields(data, names: list[str], where: str = "") -> None:
    missing = [name for name in names if data.get(name) in (None, "")]
    if missing:
        place = f" in {where}" if where else ""
        raise Rejected(
            400,
            f"missing required field{'s' if len(missing) > 1 else ''}{place}: "
            + ", ".join(missing),
        )
