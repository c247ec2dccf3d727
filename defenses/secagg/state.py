"""The public parameters of one protocol round, and the run-time state of its parties.

Kept apart from the configuration (``SecAggConfig``): the config says what the user asked for
across a run; :class:`RoundParams` is what every party of one round agrees on (derived from the
config and the round's cohort); :class:`ClientState` and :class:`ServerState` change as the
stages run (Flower keeps its SecAgg+ state the same way, in ``WorkflowState``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from privfl.defenses.secagg.constants import Stage
from privfl.defenses.secagg.graph import NeighbourGraph
from privfl.defenses.secagg.keys import KeyPair


@dataclass(frozen=True)
class RoundParams:
    """What all parties of one round know and agree on.

    Attributes:
        round: the federated round (bound into key derivation and share encryption).
        graph: who masks with, and shares secrets with, whom.
        threshold: ``t``, shares that reconstruct a client's secret.
        length: words per input vector (the ``d`` update slots and the weight slot).
        bits: the ring is ``Z_{2^bits}``; words are uint32 (``bits <= 32``) or uint64.
        require_connected: abort a round whose survivors' masking graph is split (the server
            would learn each part's sum); False only for ``allow_insecure`` research runs.
    """

    round: int
    graph: NeighbourGraph
    threshold: int
    length: int
    bits: int
    require_connected: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 64:
            raise ValueError(f"bits must be in [1, 64], got {self.bits}")
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def word_mask(self) -> np.unsignedinteger:
        """``2^bits - 1`` in :attr:`dtype`: reduces a word modulo ``2^bits``."""
        return self.dtype.type((1 << self.bits) - 1)


@dataclass
class ClientState:
    """One client's secrets and what it has learnt, stage by stage.

    Attributes:
        done: the last stage this client completed (None before AdvertiseKeys).
        encryption_keys, mask_keys: ``(c_u^SK, c_u^PK)`` and ``(s_u^SK, s_u^PK)``.
        seed: ``b_u``, the self-mask seed (32 bytes).
        roster: ``{v: (c_v^PK, s_v^PK)}`` for its share-holders (itself included), parsed.
        channel_keys: ``{v: AES-GCM key}`` agreed with each share-holder (one key per pair
            serves both directions; the associated data tells them apart).
        held: ``{u: (share of s_u^SK, share of b_u)}`` for every ``u`` whose shares it holds.
        senders: the clients that sent it a share (``U2`` in its neighbourhood).
        complaints: senders whose share failed authentication; the client does not mask with
            them (the server, told of the complaint, does not unmask that pair either).
    """

    done: Stage | None = None
    encryption_keys: KeyPair | None = None
    mask_keys: KeyPair | None = None
    seed: bytes = b""
    roster: dict[int, tuple[X25519PublicKey, X25519PublicKey]] = field(default_factory=dict)
    channel_keys: dict[int, bytes] = field(default_factory=dict)
    held: dict[int, tuple[Sequence[int], Sequence[int]]] = field(default_factory=dict)
    senders: list[int] = field(default_factory=list)
    complaints: list[int] = field(default_factory=list)


@dataclass
class ServerState:
    """What the server knows in one round.

    Attributes:
        keys: ``{u: c_u^PK || s_u^PK}`` as advertised.
        u1 .. u4: the clients alive after each stage (Bonawitz et al.'s ``U_1 .. U_4``);
            ``u3`` leaves out clients whose shares another client reported as forged.
        excluded: clients the server left out after AdvertiseKeys because too few of their
            share-holders remained.
        share_receivers: ``{u: clients u sent an encrypted share to}``.
        mailbox: ``{receiver: {sender: ciphertext}}``, relayed unread.
        accused: ``{u: clients that reported u's share as failing authentication}``.
        complaints: ``{v: senders v reported}`` (v did not mask with them).
        rejected: ``{u: stage}``: clients whose message of that stage the server refused
            (malformed, truncated, a bad or repeated public key, shares for the wrong
            clients, an unparsable unmasking response) or that the complaints left out;
            each is treated as having dropped at that stage.
        masked: ``{u: masked vector}`` as received.
        components: the connected components of the survivors' masking graph (one when the
            survivors are connected; more only when ``require_connected`` is off).
        shares: ``{(owner, kind): {x: share}}`` from the unmasking responses.
        bytes_down: server-to-client bytes sent.
    """

    keys: dict[int, bytes] = field(default_factory=dict)
    u1: list[int] = field(default_factory=list)
    u2: list[int] = field(default_factory=list)
    u3: list[int] = field(default_factory=list)
    u4: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    share_receivers: dict[int, list[int]] = field(default_factory=dict)
    mailbox: dict[int, dict[int, bytes]] = field(default_factory=dict)
    accused: dict[int, list[int]] = field(default_factory=dict)
    complaints: dict[int, set[int]] = field(default_factory=dict)
    rejected: dict[int, Stage] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    components: list[list[int]] = field(default_factory=list)
    shares: dict[tuple[int, int], dict[int, Sequence[int]]] = field(default_factory=dict)
    bytes_down: int = 0


__all__ = ["ClientState", "RoundParams", "ServerState"]
