"""What the gate keeps in Redis, and under which names.

An entry is plain data (MessagePack, never pickle: whoever can write to Redis must not be able
to run code in the app), stored with the scope tokens it was loaded under:
`[[token, ...], value]`. A scope is something a write can invalidate ("the lead with this
phone", "every lead list"); its token is an opaque value that every invalidation replaces with
one never used before. An entry is served only while every one of its scopes still has the
token it was stored with: eviction, expiry or a flush of a token can only turn a hit into a
miss, never bring an old value back.

Names, under the key prefix and the generation:
    <prefix>:<gen>:v:<namespace>:<shape>:<key>   an entry (shape: the namespace's data version)
    <prefix>:<gen>:s:<scope>                     a scope token
    <prefix>:<gen>:marker                        the generation's marker (see the gate)
"""

import itertools
import os
import threading
from dataclasses import dataclass

import msgspec

# The entry format itself; part of every value key, like each namespace's shape version.
FORMAT = "m1"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class Unstorable(Exception):
    """A value that is not plain data (a model instance, a set of objects...)."""


@dataclass(frozen=True)
class Namespace:
    """A kind of cached entry: its name (counters are kept per name), the version of its data's
    shape (bump it when the shape changes, so a deploy never reads another version's entries),
    and its time to live (seconds, or a function of the value)."""

    name: str
    shape: int = 1
    ttl: object = None


def as_namespace(namespace: "Namespace | str") -> Namespace:
    return namespace if isinstance(namespace, Namespace) else Namespace(namespace)


def value_name(prefix: str, generation: int, namespace: Namespace, key: str) -> str:
    return f"{prefix}:{generation}:v:{namespace.name}:{FORMAT}.{namespace.shape}:{key}"


def scope_name(prefix: str, generation: int, scope: str) -> str:
    return f"{prefix}:{generation}:s:{scope}"


def marker_name(prefix: str, generation: int) -> str:
    return f"{prefix}:{generation}:marker"


def encode(tokens: list[bytes], value) -> bytes:
    try:
        return _encoder.encode([tokens, value])
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise Unstorable(str(exc)) from exc


def decode(raw: bytes) -> tuple[list[bytes], object] | None:
    """(tokens, value), or None for anything that is not an entry of this format."""
    try:
        tokens, value = _decoder.decode(raw)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None
    if not isinstance(tokens, list) or not all(isinstance(t, bytes) for t in tokens):
        return None
    return tokens, value


class Nonces:
    """Token values no other process and no earlier moment of this one ever produced: a random
    prefix drawn at start-up, and a counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)  # a forked worker draws its own

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        with self._lock:
            n = next(self._counter)
        return f"{self._prefix}.{n:x}".encode()


nonces = Nonces()
