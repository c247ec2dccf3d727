"""The HE channel: clients encrypt, the server adds ciphertexts, the key holder decrypts the sum.

One round, as the parties see it::

    key holder --public context (bytes, once per party)--> server, clients
    key holder --voucher key, check key (once per client)-> client (not via the server)
    client i   --Enc([w_i * delta_i, w_i]), voucher_i ---> server       (ServerView: these bytes)
    server     --Enc(sum_i [w_i * delta_i, w_i]),
                 the vouchers of the clients summed -----> key holder
    key holder --sum_i w_i delta_i / sum_i w_i (float32,
                 rounded above the CKKS noise) ----------> model update (the federation)

A message that fails the server's checks drops its sender and the round goes on with the
others; so does a voucher the key holder cannot open (it decrypts nothing then, and the server
sends the sum without that client). The key holder decrypts only a sum of at least
``min_clients`` authenticated clients that it can verify is their sum, once a round
(:mod:`privfl.defenses.he.check`).

The server never holds a secret key, a plaintext update or (this round) the aggregate. It does
learn the aggregate afterwards if it applies the update to the global model it broadcasts, as
in any FedAvg with secure aggregation: HE hides the *individual* updates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from privfl.defenses.he.bfv import BFVScheme
from privfl.defenses.he.ckks import CKKSScheme
from privfl.defenses.he.config import DEFAULT_MIN_CLIENTS, HEConfig
from privfl.defenses.he.errors import CiphertextError, TooFewClientsError, VoucherError
from privfl.defenses.he.keys import KeyHolder
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.params import BFVParams
from privfl.defenses.he.parties import ClientEncryptor, HEServer
from privfl.defenses.he.pool import resolve_workers
from privfl.defenses.he.scheme import HEScheme
from privfl.defenses.he.threat import HE_THREAT_MODEL
from privfl.defenses.quantize import Rounding, default_max_weight
from privfl.errors import ConfigError, PrivflError
from privfl.stages import AggregationResult, Aggregator, Channel, ChannelResult, RoundContext
from privfl.update import ServerView, UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup

log = logging.getLogger(__name__)

FLOAT32_BYTES = 4
#: The random stream of the clients' stochastic rounding (BFV): ``(seed, RNG_STREAM, client,
#: round)``.
RNG_STREAM = "he-quantize"
Messages = list[tuple[int, bytes]]


class HEMetric(StrEnum):
    """Keys the HE channel adds to a round's metrics."""

    CIPHERTEXTS = "he_ciphertexts_per_client"
    CONTEXT_BYTES = "he_context_bytes"  # public context sent this round (to new parties)
    AGGREGATE_BYTES = "he_aggregate_bytes"  # server -> key holder
    RESULT_BYTES = "he_result_bytes"  # key holder -> server: the float32 weighted mean
    EXPANSION = "he_expansion"  # bytes_up over the plaintext float32 bytes
    REJECTED = "he_rejected"  # clients whose message or voucher was refused (dropped)
    GRID = "he_grid"  # the step decrypted CKKS sums were rounded to (CKKS only)
    ABORT = "he_abort"  # why the round was aborted (only when it was)


@dataclass(frozen=True)
class EncryptedRound:
    """``ServerView.masked`` under HE: every byte the server received or produced this round,
    all of it ciphertext (no plaintext of any update, no aggregate).

    Attributes:
        scheme: the scheme's description (parameters and security level).
        public_context: the public context the server holds (no secret key).
        messages: each client's message, in the order of ``ServerView.client_ids``.
        aggregate: the server's encrypted sum, or None when the round was aborted before.
    """

    plaintext_available: ClassVar[bool] = False

    scheme: str
    public_context: bytes
    messages: tuple[bytes, ...]
    aggregate: bytes | None


def _reliable(messages: Messages) -> Messages:
    return messages


class HEChannel(Channel):
    """Homomorphic-encrypted aggregation of the weighted mean (FedAvg).

    Args:
        scheme: the HE scheme and its parameters.
        min_clients: the key holder decrypts only sums of at least this many authenticated
            clients' updates.
        network: what the wire delivers, from the clients' ``(client id, bytes)`` messages to
            what the server receives (identity by default; tests corrupt messages here).
        workers: processes that encrypt the clients' chunks (1: in this process).

    Attributes:
        server: the aggregation server (public context only).
    """

    name = "he"
    threat_model = HE_THREAT_MODEL

    def __init__(
        self,
        scheme: HEScheme,
        *,
        min_clients: int = DEFAULT_MIN_CLIENTS,
        network: Callable[[Messages], Messages] = _reliable,
        workers: int = 1,
    ) -> None:
        self._scheme = scheme
        self._key_holder = KeyHolder(scheme, min_clients=min_clients)
        public = self._key_holder.public_context
        self.server = HEServer(scheme, public)
        # The clients get their keys from the key holder directly, never through the server.
        self._clients = ClientEncryptor(
            scheme, public, workers=workers, enrol=self._key_holder.enrol
        )
        self._network = network
        # Parties that already received the public context (a resumed run has a new key
        # holder, so nothing here is checkpointed: every party gets the new context again).
        self._has_context: set[int] = set()
        self._server_has_context = False

    @property
    def scheme(self) -> HEScheme:
        """The encryption scheme (its codec and noise bound set the error of a decrypted sum)."""
        return self._scheme

    @staticmethod
    def check_aggregator(aggregator: Aggregator) -> None:
        """Raise :class:`ConfigError` unless ``aggregator`` is the weighted mean: the server
        only ever holds ciphertexts, so a rule that needs individual updates cannot run."""
        if not aggregator.is_weighted_mean:
            raise ConfigError(
                f"defense.he computes only the weighted mean under encryption; aggregator "
                f"{type(aggregator).__name__} needs the individual plaintext updates"
            )

    def transmit(
        self, batch: UpdateBatch, aggregator: Aggregator, ctx: RoundContext
    ) -> ChannelResult:
        """Encrypt at the clients, add at the server, decrypt at the key holder. A bad message
        or voucher drops its sender (``dropped``, ``he_rejected``); a sum the key holder
        refuses aborts the round (``aggregation=None``, reason in ``he_abort``)."""
        self.check_aggregator(aggregator)
        n, dim = len(batch), ctx.spec.dim
        if n == 0:
            view = ServerView(ctx.round, ctx.global_params, batch.client_ids, channel=self.name)
            return ChannelResult(aggregation=None, view=view, bytes_up=0)
        if np.any(batch.weights < 0) or not batch.weights.sum() > 0:
            raise PrivflError(
                f"aggregation weights must be >= 0 with a positive sum, got {batch.weights}"
            )
        info: dict[str, Any] = {
            HEMetric.CIPHERTEXTS.value: chunk_count(dim, self._scheme.slots),
            HEMetric.CONTEXT_BYTES.value: self._context_bytes(batch.client_ids),
        }
        t0 = time.perf_counter()
        ids = batch.client_ids.tolist()
        messages, encoding_info = self._clients.encrypt(
            batch, round=ctx.round, rng=lambda client: ctx.rng(RNG_STREAM, client)
        )
        info.update(encoding_info)
        sent = list(zip(ids, messages, strict=True))
        bytes_up = sum(len(m) for _, m in sent)
        info[HEMetric.EXPANSION.value] = round(bytes_up / (n * dim * FLOAT32_BYTES), 4)
        received = self._network(sent)
        t1 = time.perf_counter()
        rejected: dict[int, str] = {}
        aggregate: bytes | None = None
        decoded = None
        try:
            aggregate = self.server.aggregate(received, round=ctx.round, dim=dim, rejected=rejected)
            t2 = time.perf_counter()
            current = [(c, m) for c, m in received if c not in rejected]
            while decoded is None:
                try:
                    decoded = self._key_holder.decrypt(aggregate, round=ctx.round, dim=dim)
                except VoucherError as e:  # attributable, nothing decrypted: sum without them
                    # Only clients that sent can be dropped; a voucher of one that did not
                    # means the server made it up (and each retry has one client fewer).
                    sent_now = {c for c, _ in current}
                    named = {c: why for c, why in e.clients.items() if c in sent_now}
                    if not named:
                        msg = f"the aggregate carries vouchers of clients that did not send: {e}"
                        raise CiphertextError(msg) from None
                    log.warning("round %d: dropped for their vouchers: %s", ctx.round, e)
                    rejected.update(named)
                    current = [(c, m) for c, m in current if c not in named]
                    if not current:
                        msg = f"round {ctx.round}: every client was rejected"
                        raise CiphertextError(msg) from None
                    aggregate = self.server.aggregate(
                        current, round=ctx.round, dim=dim, rejected=rejected
                    )
        except (CiphertextError, TooFewClientsError) as e:
            log.warning("round %d: HE aggregation aborted (model unchanged): %s", ctx.round, e)
            info[HEMetric.ABORT.value] = str(e)
        else:
            log.debug(
                "round %d: encrypt %.2fs, add %.2fs, check and decrypt %.2fs",
                ctx.round,
                t1 - t0,
                t2 - t1,
                time.perf_counter() - t2,
            )
        info[HEMetric.REJECTED.value] = sorted(rejected)
        if aggregate is not None:
            info[HEMetric.AGGREGATE_BYTES.value] = len(aggregate)
        view = ServerView(
            round=ctx.round,
            global_params=ctx.global_params,
            client_ids=batch.client_ids,
            masked=EncryptedRound(
                scheme=self._scheme.describe(),
                public_context=self.server.public_context,
                messages=tuple(m for _, m in received),
                aggregate=aggregate,
            ),
            channel=self.name,
        )
        aggregation = None
        dropped = np.array(sorted(rejected), dtype=np.int64)
        if decoded is not None:
            aggregation = AggregationResult(
                torch.from_numpy(decoded.delta), weight_sum=float(decoded.total_weight)
            )
            dropped = np.setdiff1d(batch.client_ids, decoded.contributors).astype(np.int64)
            info[HEMetric.RESULT_BYTES.value] = decoded.delta.nbytes
            if decoded.grid is not None:
                info[HEMetric.GRID.value] = decoded.grid
        return ChannelResult(
            aggregation=aggregation, view=view, bytes_up=bytes_up, dropped=dropped, info=info
        )

    def _context_bytes(self, client_ids: np.ndarray) -> int:
        """Public-context bytes the key holder sends this round: to the server the first time,
        and to every client that has not received it yet."""
        new = set(client_ids.tolist()) - self._has_context
        self._has_context |= new
        parties = len(new) + (not self._server_has_context)
        self._server_has_context = True
        return parties * len(self._key_holder.public_context)


def create_he_scheme(config: HEConfig, max_weight: float | None = None) -> HEScheme:
    """The scheme ``[defense.he]`` asks for. ``max_weight`` (BFV, when the config leaves it
    unset) is the largest weight a client can have."""
    params = config.params()
    if isinstance(params, BFVParams):
        weight = config.max_weight or max_weight
        if weight is None:
            raise ConfigError("defense.he.max_weight is needed for scheme = 'bfv'")
        return BFVScheme(
            params, clip=config.clip, max_weight=weight, rounding=Rounding(config.rounding)
        )
    return CKKSScheme(params)


def create_he_channel(config: HEConfig, setup: RunSetup | None = None) -> HEChannel:
    """The channel of ``[defense.he]`` (a new key holder, hence a new key). BFV's
    ``max_weight`` defaults to :func:`~privfl.defenses.quantize.default_max_weight` of
    ``setup`` (1 under central or local DP, else the largest example count)."""
    max_weight = (
        None if setup is None else default_max_weight(setup.config, setup.data.partition.sizes())
    )
    return HEChannel(
        create_he_scheme(config, max_weight),
        min_clients=config.min_clients,
        workers=resolve_workers(config.workers),
    )


__all__ = ["EncryptedRound", "HEChannel", "HEMetric", "create_he_channel", "create_he_scheme"]
