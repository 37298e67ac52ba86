"""Signature checks over the raw body, constant-time, before anything is parsed."""

import base64
import hashlib
import hmac
import re
import time
from urllib.parse import urlsplit, urlunsplit


class BadSignature(Exception):
    """The delivery's signature or timestamp does not verify; the message says which."""


def elevenlabs_signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v0={mac.hexdigest()}"


# Strict forms: ASCII digits of a plausible length for the timestamp, a SHA-256 hex digest,
# and a bounded header. Anything else is a malformed header (401), never a parse error (500).
_STAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
MAX_HEADER_LENGTH = 1024


def verify_elevenlabs(secret: str, header: str, body: bytes, max_age: int, max_skew: int) -> None:
    """`ElevenLabs-Signature: t=<unix>,v0=<hex HMAC-SHA256(secret, "<t>." + body)>`."""
    if not header:
        raise BadSignature("missing ElevenLabs-Signature header")
    if len(header) > MAX_HEADER_LENGTH:
        raise BadSignature("malformed ElevenLabs-Signature header")
    parts = dict(item.strip().split("=", 1) for item in header.split(",") if "=" in item)
    stamp, digest = parts.get("t", ""), parts.get("v0", "")
    if not _STAMP.fullmatch(stamp) or not _HEX_DIGEST.fullmatch(digest):
        raise BadSignature("malformed ElevenLabs-Signature header")
    age = time.time() - int(stamp)
    if age > max_age:
        raise BadSignature("signature timestamp too old")
    if age < -max_skew:
        raise BadSignature("signature timestamp in the future")
    expected = elevenlabs_signature(secret, int(stamp), body).split("v0=", 1)[1]
    if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
        raise BadSignature("signature does not match")


def twilio_signature(token: str, url: str, params: dict[str, list[str]]) -> str:
    """base64(HMAC-SHA1(token, url + name + value for each parameter sorted by name, each
    name's distinct values sorted))."""
    data = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            data += name + value
    mac = hmac.new(token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def verify_twilio(token: str, header: str, url: str, params: dict[str, list[str]]) -> None:
    if not header:
        raise BadSignature("missing X-Twilio-Signature header")
    if len(header) > MAX_HEADER_LENGTH or not header.isascii():
        raise BadSignature("malformed X-Twilio-Signature header")
    # Twilio may sign the URL with or without the default port; accept either form.
    for candidate in {url, _without_default_port(url), _with_default_port(url)}:
        if hmac.compare_digest(
            twilio_signature(token, candidate, params).encode(), header.encode()
        ):
            return
    raise BadSignature("signature does not match")


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:  # a port out of range in the Host header: no default to add or drop
        return -1


def _with_default_port(url: str) -> str:
    parts = urlsplit(url)
    if _port(parts):
        return url
    port = 443 if parts.scheme == "https" else 80
    return urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))


def _without_default_port(url: str) -> str:
    parts = urlsplit(url)
    if _port(parts) not in (80, 443):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))
