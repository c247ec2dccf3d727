"""Errors of the secure-aggregation protocol."""

from __future__ import annotations

from privfl.errors import AggregationError, PrivflError


class ProtocolError(PrivflError):
    """A party received a message it must refuse: out of order, malformed, or inconsistent
    with what it knows (an honest client stops rather than risk leaking its secrets)."""


class ShareIntegrityError(ProtocolError):
    """An encrypted share failed authentication: tampered, replayed, or misaddressed."""


class SecAggAbort(AggregationError):
    """The round cannot be completed: too few clients remain at some stage, or a needed secret
    has fewer than ``t`` shares. Nothing is aggregated and the model is left unchanged.

    Attributes:
        stage: the protocol stage at which the server gave up.
        reason: why, in words.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"secure aggregation aborted at {stage}: {reason}")
        self.stage = stage
        self.reason = reason


__all__ = ["ProtocolError", "SecAggAbort", "ShareIntegrityError"]
