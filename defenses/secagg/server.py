"""The secure-aggregation server: collects each stage's messages, relays the encrypted shares
it cannot read, and at the end removes the masks it is allowed to remove (Bonawitz et al.,
CCS 2017, Fig. 4; SecAgg+ neighbourhoods of Bell et al., CCS 2020).

It learns: the public keys, who dropped when, the masked vectors, one of the two secrets of
each client (``b_u`` of survivors, ``s_u^SK`` of clients that dropped after sharing), and the
sum of the survivors' inputs. It aborts (:class:`SecAggAbort`) when fewer than ``t`` clients
remain at a stage, when the survivors' masking graph is split (unmasking would reveal the sum
of each part), or when a secret it needs has fewer than ``t`` shares or shares that do not lie
on one polynomial.

Every message is parsed and checked where it arrives; one that fails (malformed, truncated, a
public key that is not canonical, of low order or advertised twice, shares addressed to the
wrong clients, an unparsable unmasking response) makes its sender count as dropped at that
stage (``ServerState.rejected``), never an exception out of the server.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np

from privfl.defenses.secagg import messages, shamir
from privfl.defenses.secagg.constants import KEY_BYTES, Purpose, ShareKind, Stage
from privfl.defenses.secagg.errors import ProtocolError, SecAggAbort
from privfl.defenses.secagg.keys import KeyPair, agree, check_public_key
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

    def _reject(self, u: int, stage: Stage, why: str) -> None:
        """Treat client ``u`` as dropped at ``stage`` because of its message."""
        log.warning(
            "secagg round %d: client %d treated as dropped at %s: %s",
            self.params.round,
            u,
            stage.value,
            why,
        )
        self.state.rejected.setdefault(u, stage)

    def _send(self, out: dict[int, bytes]) -> dict[int, bytes]:
        self.state.bytes_down += sum(len(m) for m in out.values())
        return out

    def _holders(self, u: int) -> set[int]:
        return {int(v) for v in self.params.graph.holders(u)}

    # ------------------------------------------------------------- Round 0: AdvertiseKeys

    def collect_keys(self, received: Mapping[int, bytes]) -> dict[int, bytes]:
        """``U1`` = clients that advertised two valid public keys (32 bytes each, canonical,
        not of low order, different from each other and from every other client's), less
        those left with fewer than ``t`` share-holders (repeatedly, since leaving one out
        shrinks its neighbours' neighbourhoods). Returns each ``u in U1`` its Roster: the keys
        of its share-holders.

        A key advertised by two clients cannot be attributed (keys are fresh each round, so a
        copy means one of them is malicious): both are left out."""
        s, t = self.state, self.params.threshold
        for u in sorted(received):
            if u not in self._ids:
                log.warning("secagg: keys from client %d, which is not in this round", u)
                continue
            try:
                c_pk, s_pk = messages.decode_keys(received[u])
                check_public_key(c_pk)
                check_public_key(s_pk)
            except (ProtocolError, ValueError) as e:
                self._reject(u, Stage.ADVERTISE_KEYS, str(e))
                continue
            if c_pk == s_pk:
                self._reject(u, Stage.ADVERTISE_KEYS, "the same public key twice")
                continue
            s.keys[u] = c_pk + s_pk
        advertisers: dict[bytes, set[int]] = {}
        for u, both in s.keys.items():
            for pk in (both[:KEY_BYTES], both[KEY_BYTES:]):
                advertisers.setdefault(pk, set()).add(u)
        for u in sorted({u for us in advertisers.values() if len(us) > 1 for u in us}):
            del s.keys[u]
            self._reject(u, Stage.ADVERTISE_KEYS, "a public key another client also advertised")
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
                self._reject(u, Stage.SHARE_KEYS, str(e))
                continue
            expected = (self._holders(u) & u1) - {u}
            if set(cts) != expected:
                self._reject(u, Stage.SHARE_KEYS, "shares for the wrong clients")
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
        """``U3`` = clients of ``U2`` whose masked vector arrived, less the clients that the
        complaints leave out (:meth:`_left_out`: a complaint says a share from the accused
        failed authentication; the complainer did not mask with it). Those are treated as
        dropped: their vectors are set aside and their pairwise masks will be removed.

        Then, before any unmasking share is asked for, ``U3``'s masking graph must be
        connected: pairwise masks cancel only inside a connected part, so unmasking a split
        ``U3`` reveals the sum of each part (Bell et al., CCS 2020). A split aborts the round
        unless :attr:`RoundParams.require_connected` is off (research runs that study it).
        Returns each ``v in U3`` the list of survivors among its share-senders."""
        s, p = self.state, self.params
        u2 = set(s.u2)
        for u in sorted(received):
            if u not in u2:
                continue
            try:
                complaints, vector = messages.decode_masked(received[u], p.length, p.dtype)
            except ProtocolError as e:
                self._reject(u, Stage.MASKED_INPUT, str(e))
                continue
            s.masked[u] = vector
            for w in complaints:
                if w in self._senders_to(u):
                    s.accused.setdefault(w, []).append(u)
                    s.complaints.setdefault(u, set()).add(w)
        out = self._left_out()
        for u in sorted(out):
            stage = Stage.SHARE_KEYS if u in s.accused else Stage.MASKED_INPUT
            self._reject(u, stage, f"complaints about shares (involved: {sorted(s.accused)})")
        s.u3 = sorted(u for u in s.masked if u not in out)
        self._require(Stage.MASKED_INPUT, s.u3)
        parts = p.graph.components(s.u3)
        s.components = [part.tolist() for part in parts]
        if len(parts) > 1:
            sizes = ", ".join(str(len(part)) for part in parts)
            why = (
                f"the survivors' masking graph is not connected ({len(parts)} parts, of "
                f"{sizes} clients): unmasking would reveal the sum of each part, not only the "
                "total (Bell et al. 2020 need it connected)"
            )
            if p.require_connected:
                raise SecAggAbort(Stage.UNMASKING.value, why + "; no unmasking share was asked for")
            log.warning("secagg round %d (allow_insecure): %s", p.round, why)
        u3 = set(s.u3)
        return self._send(
            {
                v: messages.encode_survivors(len(u3), sorted((self._senders_to(v) & u3) | {v}))
                for v in s.u3
            }
        )

    def _left_out(self) -> set[int]:
        """The clients to treat as dropped because of complaints.

        Each complaint is an edge between the complainer and the accused: one of them is at
        fault, and the server cannot tell which (it cannot open the share). It leaves out a
        small set of clients touching every edge (greedy vertex cover: the client in most
        disputes first; on a tie the accused, then the smaller id), so one client that
        complains about all its neighbours, or whose shares all fail, is left out alone,
        and a single forged ciphertext drops its sender, as before.
        """
        s = self.state
        edges = {frozenset((u, w)) for u, ws in s.complaints.items() for w in ws}
        accusations = Counter(w for ws in s.complaints.values() for w in ws)
        out: set[int] = set()
        while edges:
            degree = Counter(c for e in edges for c in e)
            pick = max(degree, key=lambda c: (degree[c], accusations[c], -c))
            out.add(pick)
            edges = {e for e in edges if pick not in e}
        return out

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
                self._reject(v, Stage.UNMASKING, f"unmasking response ignored: {e}")
                continue
            s.u4.append(v)
            allowed = (self._senders_to(v) - s.complaints.get(v, set())) | {v}
            for owner, (kind, value) in entries.items():
                wanted = ShareKind.SELF_MASK_SEED if owner in u3 else ShareKind.MASK_KEY
                if owner not in allowed or kind is not wanted:
                    log.warning("secagg: client %d sent an unrequested share of %d", v, owner)
                    continue
                s.shares.setdefault((owner, kind), {})[v + 1] = value
        self._require(Stage.UNMASKING, s.u4)
        # the survivors that masked with each client that dropped after sharing
        peers = {
            u: sorted(
                v for v in u3 if u in self._senders_to(v) and u not in s.complaints.get(v, ())
            )
            for u in sorted(set(s.u2) - u3)
        }
        needed = [(u, ShareKind.SELF_MASK_SEED) for u in s.u3]
        needed += [(u, ShareKind.MASK_KEY) for u, vs in peers.items() if vs]
        secrets = self._recover_all(needed)
        total = np.zeros(p.length, dtype=p.dtype)
        for u in s.u3:
            np.add(total, s.masked[u], out=total, casting="unsafe")
        for u in s.u3:
            self._expander.subtract(total, secrets[(u, ShareKind.SELF_MASK_SEED)])
        for u, vs in peers.items():
            if not vs:
                continue
            keys = KeyPair.from_private_bytes(secrets[(u, ShareKind.MASK_KEY)])
            if keys.public != s.keys[u][KEY_BYTES:]:
                raise SecAggAbort(
                    Stage.UNMASKING.value,
                    f"the mask key rebuilt for client {u} does not match its public key",
                )
            for v in vs:
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

    def _recover_all(self, needed: list[tuple[int, ShareKind]]) -> dict[tuple[int, int], bytes]:
        """Rebuild each ``(owner, kind)`` secret from its unmasking shares.

        With ``m > t`` shares of a secret, all ``m`` must lie on one polynomial of degree
        ``t - 1`` per limb (:func:`shamir.reconstruct`, batched over the secrets with the same
        ``m``), or the round aborts: a wrong share (a holder's or the dealer's, which the
        server cannot tell apart) would otherwise give a wrong secret and a wrong sum with no
        warning. This detects any ``m - t`` or fewer wrong shares; with exactly ``t`` shares
        there is nothing to compare, and a rebuilt ``s^SK`` is still checked against its
        public key (a rebuilt ``b_u`` has nothing to be checked against).
        """
        shares, t = self.state.shares, self.params.threshold
        for owner, kind in needed:
            got = len(shares.get((owner, kind), {}))
            if got < t:
                raise SecAggAbort(
                    Stage.UNMASKING.value,
                    f"client {owner}'s {_what(kind)} has {got} shares, fewer than t = {t}",
                )
        by_count: dict[int, list[tuple[int, ShareKind]]] = {}
        for key in needed:
            by_count.setdefault(len(shares[key]), []).append(key)
        out: dict[tuple[int, int], bytes] = {}
        for m, keys in by_count.items():
            rows = [sorted(shares[key]) for key in keys]
            xs = np.array(rows, dtype=np.int64)
            ys = np.array(
                [[shares[key][x] for x in row] for key, row in zip(keys, rows, strict=True)],
                dtype=np.int64,
            )
            limbs, ok = shamir.reconstruct(xs, ys, threshold=t)
            if not ok.all():
                bad = [keys[i] for i in np.flatnonzero(~ok)]
                owner, kind = bad[0]
                raise SecAggAbort(
                    Stage.UNMASKING.value,
                    f"client {owner}'s {_what(kind)} shares are inconsistent ({m} shares not "
                    f"on one polynomial of degree {t - 1}; {len(bad)} secret(s) affected): a "
                    "share is wrong, no sum is released",
                )
            for (owner, kind), row in zip(keys, limbs, strict=True):
                try:
                    out[(owner, kind)] = shamir.from_limbs(row)
                except ValueError:
                    raise SecAggAbort(
                        Stage.UNMASKING.value,
                        f"client {owner}'s {_what(kind)} shares are inconsistent (not a "
                        "256-bit secret)",
                    ) from None
        return out


def _what(kind: ShareKind) -> str:
    return "self-mask seed" if kind is ShareKind.SELF_MASK_SEED else "mask key"


__all__ = ["Relay", "SecAggServer"]
