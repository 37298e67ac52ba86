"""The cache gate: every cached read and every invalidation in opsdash goes through `gate`."""

from monitoring.cache.entries import Namespace
from monitoring.cache.gate import gate

__all__ = ["Namespace", "gate"]
