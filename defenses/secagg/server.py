"""The secure-aggregation server: collects each stage's messages, relays the encrypted shares
it cannot read, and at the end removes the masks it is allowed to remove (Bonawitz et al.,
CCS 2017, Fig. 4; SecAgg+ neighbourhoods of Bell et al., CCS 2020).

It learns: the public keys, who dropped when, the masked vectors, one of the two secrets of
each client (``b_u`` of survivors, ``s_u^SK`` of clients that dropped after sharing), and the
sum of the survivors' inputs. It aborts (:class:`SecAggAbort`) when fewer than ``t`` clients
remain at a stage or a secret it needs has fewer than ``t`` shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from privfl.defenses.secagg import messages, shamir
from privfl.defenses.secagg.constants import KEY_BYTES, Purpose, ShareKind, Stage
from privfl.defenses.secagg.errors import ProtocolError, SecAggAbort
from privfl.defenses.secagg.keys import KeyPair, agree
from privfl.defenses.secagg.masking import MaskExpander, pairwise_sign
from privfl.defenses.secagg.state import RoundParams, ServerState

log = logging.getLogger(__name__)

#: ``relay(sender, receiver, ciphertext) -> ciphertext``: the path an encrypted share takes
#: through the server. The identity for an honest server; tests put an adversary here.
Relay = Callable[[int, int, bytes], bytes]


def _honest_relay(sender: int, receiver: int, ciphertext: bytes) -> bytes:
    return ciphertext


class SecAggServer:
    """The server of one round.

    Args:
        params: the round's public parameters.
        relay: what happens to a share ciphertext between its sender and its receiver.
        expander: a mask expander to reuse (buffers only).
    """

    def __init__(
        self,
        params: RoundParams,
        relay: Relay | None = None,
        expander: MaskExpander | None = None,
    ) -> None:
        self.params = params
        self.relay = relay or _honest_relay
        self.state = ServerState()
        self._expander = expander or MaskExpander(params.length, params.dtype)
        self._ids = {int(i) for i in params.graph.ids}
        self._senders: dict[int, set[int]] = {}

    def _require(self, stage: Stage, alive: list[int]) -> None:
        if len(alive) < self.params.threshold:
            raise SecAggAbort(
                stage.value,
                f"{len(alive)} clients remain, fewer than the threshold t = "
                f"{self.params.threshold}",
            )

    def _send(self, out: dict[int, bytes]) -> dict[int, bytes]:
        self.state.bytes_down += sum(len(m) for m in out.values())
        return out

    def _holders(self, u: int) -> set[int]:
        return {int(v) for v in self.params.graph.holders(u)}

    # ------------------------------------------------------------- Round 0: AdvertiseKeys

    def collect_keys(self, received: Mapping[int, bytes]) -> dict[int, bytes]:
        """``U1`` = clients that advertised well-formed keys, less those left with fewer than
        ``t`` share-holders (repeatedly, since leaving one out shrinks its neighbours'
        neighbourhoods). Returns each ``u in U1`` its Roster: the keys of its share-holders."""
        s, t = self.state, self.params.threshold
        for u, msg in received.items():
            if u not in self._ids:
                log.warning("secagg: keys from client %d, which is not in this round", u)
                continue
            try:
                c_pk, s_pk = messages.decode_keys(msg)
            except ProtocolError as e:
                log.warning("secagg: client %d dropped: %s", u, e)
                continue
            s.keys[u] = c_pk + s_pk
        self._require(Stage.ADVERTISE_KEYS, sorted(s.keys))
        alive = set(s.keys)
        while True:
            short = {u for u in alive if len(self._holders(u) & alive) < t}
            if not short:
                break
            alive -= short
        s.u1 = sorted(alive)
        s.excluded = sorted(set(s.keys) - alive)
        if len(s.u1) < t:
            raise SecAggAbort(
                Stage.ADVERTISE_KEYS.value,
                f"{len(s.u1)} clients keep at least t = {t} share-holders (of "
                f"{len(s.keys)} that advertised keys)",
            )
        return self._send(
            {
                u: messages.encode_roster({v: s.keys[v] for v in self._holders(u) & alive})
                for u in s.u1
            }
        )

    # ------------------------------------------------------------- Round 1: ShareKeys

    def collect_shares(self, received: Mapping[int, bytes]) -> dict[int, bytes]:
        """``U2`` = clients of ``U1`` that sent one ciphertext to each of their other
        share-holders in ``U1``. Returns each ``v in U2`` its Inbox: the ciphertexts addressed
        to it by clients of ``U2``, relayed unread."""
        s = self.state
        u1 = set(s.u1)
        for u in sorted(received):
            if u not in u1:
                continue
            try:
                cts = messages.decode_ciphertexts(received[u], "ShareKeys")
            except ProtocolError as e:
                log.warning("secagg: client %d dropped: %s", u, e)
                continue
            expected = (self._holders(u) & u1) - {u}
            if set(cts) != expected:
                log.warning("secagg: client %d dropped: shares for the wrong clients", u)
                continue
            s.u2.append(u)
            s.share_receivers[u] = sorted(cts)
            for v, ct in cts.items():
                s.mailbox.setdefault(v, {})[u] = ct
        self._require(Stage.SHARE_KEYS, s.u2)
        u2 = set(s.u2)
        self._senders = {v: {u for u in s.mailbox.get(v, {}) if u in u2} for v in s.u2}
        return self._send(
            {
                v: messages.encode_ciphertexts(
                    {u: self.relay(u, v, s.mailbox[v][u]) for u in sorted(self._senders[v])}
                )
                for v in s.u2
            }
        )

    def _senders_to(self, v: int) -> set[int]:
        """The clients whose shares ``v`` received (and so with whom ``v`` masked)."""
        return self._senders.get(v, set())

    # ------------------------------------------------------------- Round 2: MaskedInput

    def collect_masked(self, received: Mapping[int, bytes]) -> dict[int, bytes]:
        """``U3`` = clients of ``U2`` whose masked vector arrived, less any client that another
        reported for a share failing authentication (treated as dropped: its vector is set
        aside and its pairwise masks will be removed). Returns each ``v in U3`` the list of
        survivors among its share-senders."""
        s, p = self.state, self.params
        u2 = set(s.u2)
        for u in sorted(received):
            if u not in u2:
                continue
            try:
                complaints, vector = messages.decode_masked(received[u], p.length, p.dtype)
            except ProtocolError as e:
                log.warning("secagg: client %d dropped: %s", u, e)
                continue
            s.masked[u] = vector
            for w in complaints:
                if w in self._senders_to(u):
                    s.accused.setdefault(w, []).append(u)
        if s.accused:
            log.warning(
                "secagg round %d: shares failed authentication; treated as dropped: %s",
                p.round,
                sorted(s.accused),
            )
        s.u3 = sorted(u for u in s.masked if u not in s.accused)
        self._require(Stage.MASKED_INPUT, s.u3)
        u3 = set(s.u3)
        return self._send(
            {
                v: messages.encode_survivors(len(u3), sorted((self._senders_to(v) & u3) | {v}))
                for v in s.u3
            }
        )

    # ------------------------------------------------------------- Round 3: Unmasking

    def collect_unmasking(self, received: Mapping[int, bytes]) -> np.ndarray:
        """Rebuild ``b_u`` for every survivor and ``s_u^SK`` for every client that dropped
        after sharing, and return the sum of the survivors' inputs modulo ``2^bits``:

            sum_{u in U3} y_u - sum_{u in U3} PRG(b_u)
                - sum_{u in U2 \\ U3} sum_{v in N(u) ∩ U3} sign(v, u) PRG(s_{v,u})

        Shape ``(length,)``, :attr:`RoundParams.dtype`.
        """
        s, p = self.state, self.params
        u3 = set(s.u3)
        for v in sorted(received):
            if v not in u3:
                continue
            try:
                entries = messages.decode_unmasking(received[v])
            except ProtocolError as e:
                log.warning("secagg: unmasking response of client %d ignored: %s", v, e)
                continue
            s.u4.append(v)
            allowed = self._senders_to(v) | {v}
            for owner, (kind, value) in entries.items():
                wanted = ShareKind.SELF_MASK_SEED if owner in u3 else ShareKind.MASK_KEY
                if owner not in allowed or kind is not wanted:
                    log.warning("secagg: client %d sent an unrequested share of %d", v, owner)
                    continue
                s.shares.setdefault((owner, kind), {})[v + 1] = value
        self._require(Stage.UNMASKING, s.u4)
        total = np.zeros(p.length, dtype=p.dtype)
        for u in s.u3:
            np.add(total, s.masked[u], out=total, casting="unsafe")
        for u in s.u3:
            self._expander.subtract(total, self._recover(u, ShareKind.SELF_MASK_SEED))
        for u in sorted(set(s.u2) - u3):
            peers = sorted(v for v in u3 if u in self._senders_to(v))
            if not peers:
                continue
            keys = KeyPair.from_private_bytes(self._recover(u, ShareKind.MASK_KEY))
            if keys.public != s.keys[u][KEY_BYTES:]:
                raise SecAggAbort(
                    Stage.UNMASKING.value,
                    f"the mask key rebuilt for client {u} does not match its public key",
                )
            for v in peers:
                seed = agree(
                    keys.private,
                    s.keys[v][KEY_BYTES:],
                    purpose=Purpose.PAIRWISE_MASK,
                    round=p.round,
                    a=u,
                    b=v,
                )
                # y_v holds sign(v, u) PRG(s_{v,u}); take it out.
                self._expander.apply(total, seed, -pairwise_sign(v, u))
        np.bitwise_and(total, p.word_mask, out=total)
        return total

    def _recover(self, owner: int, kind: ShareKind) -> bytes:
        shares = self.state.shares.get((owner, kind), {})
        t = self.params.threshold
        if len(shares) < t:
            what = "self-mask seed" if kind is ShareKind.SELF_MASK_SEED else "mask key"
            raise SecAggAbort(
                Stage.UNMASKING.value,
                f"client {owner}'s {what} has {len(shares)} shares, fewer than t = {t}",
            )
        try:
            return shamir.combine(shares, threshold=t)
        except ValueError:
            raise SecAggAbort(
                Stage.UNMASKING.value, f"client {owner}'s shares are inconsistent"
            ) from None


__all__ = ["Relay", "SecAggServer"]
