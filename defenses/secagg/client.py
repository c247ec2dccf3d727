"""A secure-aggregation client: the client side of Bonawitz et al. (CCS 2017, Fig. 4, the
semi-honest protocol), with SecAgg+'s neighbourhoods (Bell et al., CCS 2020).

Every method takes the server's message of a stage as bytes and returns the client's reply as
bytes; the client refuses (:class:`ProtocolError`) anything out of order or inconsistent with
what it knows. Its secrets (two X25519 private keys and the self-mask seed ``b_u``) never leave
it except as Shamir shares encrypted to their holders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from privfl.defenses.secagg import messages, shamir
from privfl.defenses.secagg.constants import SEED_BYTES, Purpose, ShareKind, Stage
from privfl.defenses.secagg.errors import ProtocolError, ShareIntegrityError
from privfl.defenses.secagg.keys import (
    KeyPair,
    agree,
    decrypt_share,
    encrypt_share,
    parse_public,
)
from privfl.defenses.secagg.masking import MaskExpander, pairwise_sign
from privfl.defenses.secagg.state import ClientState, RoundParams


class SecAggClient:
    """Client ``cid`` of one round, holding its encoded input.

    Args:
        cid: the client's id (one of ``params.graph.ids``).
        params: the round's public parameters.
        encoded: the client's input in the ring, ``params.dtype``, shape ``(params.length,)``
            (not modified).
        expander: a mask expander to reuse across clients (buffers only, no secrets kept).
    """

    def __init__(
        self,
        cid: int,
        params: RoundParams,
        encoded: np.ndarray,
        expander: MaskExpander | None = None,
    ) -> None:
        if encoded.shape != (params.length,) or encoded.dtype != params.dtype:
            raise ValueError(
                f"client {cid}: input must be {params.dtype} ({params.length},), "
                f"got {encoded.dtype} {encoded.shape}"
            )
        self.cid = int(cid)
        self.params = params
        self.holders = {int(v) for v in params.graph.holders(self.cid)}
        self._input = encoded
        self._expander = expander or MaskExpander(params.length, params.dtype)
        self.state = ClientState()

    def _advance(self, stage: Stage, previous: Stage | None) -> None:
        if self.state.done is not previous:
            raise ProtocolError(
                f"client {self.cid}: {stage.value} after "
                f"{self.state.done.value if self.state.done else 'nothing'}"
            )

    def _keys(self) -> tuple[KeyPair, KeyPair]:
        """The client's ``c`` and ``s`` key pairs (made at AdvertiseKeys)."""
        c, m = self.state.encryption_keys, self.state.mask_keys
        if c is None or m is None:
            raise ProtocolError(f"client {self.cid}: no keys before AdvertiseKeys")
        return c, m

    # ------------------------------------------------------------- Round 0: AdvertiseKeys

    def advertise_keys(self) -> bytes:
        """Generate ``(c_u^SK, c_u^PK)``, ``(s_u^SK, s_u^PK)`` and ``b_u`` (OS CSPRNG); send the
        public keys."""
        self._advance(Stage.ADVERTISE_KEYS, None)
        s = self.state
        s.encryption_keys, s.mask_keys = KeyPair.generate(), KeyPair.generate()
        s.seed = _random_seed()
        s.done = Stage.ADVERTISE_KEYS
        return messages.encode_keys(s.encryption_keys.public, s.mask_keys.public)

    # ------------------------------------------------------------- Round 1: ShareKeys

    def share_keys(self, roster: bytes) -> bytes:
        """Shamir-share ``s_u^SK`` and ``b_u`` ``t``-of-``|roster|`` among the share-holders
        in ``roster`` (its neighbours that advertised keys, and itself) and encrypt each pair
        of shares to its holder (AES-GCM under the agreed ``c`` key, bound to round, sender
        and receiver)."""
        self._advance(Stage.SHARE_KEYS, Stage.ADVERTISE_KEYS)
        s, p = self.state, self.params
        encryption_keys, mask_keys = self._keys()
        entries = messages.decode_roster(roster)
        if not set(entries) <= self.holders:
            strangers = sorted(set(entries) - self.holders)
            raise ProtocolError(f"client {self.cid}: roster lists non-neighbours {strangers}")
        own = (encryption_keys.public, mask_keys.public)
        if entries.get(self.cid) != own:
            raise ProtocolError(f"client {self.cid}: roster misstates its own keys")
        if len(entries) < p.threshold:
            raise ProtocolError(
                f"client {self.cid}: {len(entries)} share-holders, fewer than t = {p.threshold}"
            )
        public_keys = [pk for pair in entries.values() for pk in pair]
        if len(set(public_keys)) != len(public_keys):
            raise ProtocolError(f"client {self.cid}: a public key appears twice in the roster")
        try:  # length, canonical, not of low order (the server checked it too)
            s.roster = {v: (parse_public(c), parse_public(m)) for v, (c, m) in entries.items()}
        except ValueError as e:
            raise ProtocolError(f"client {self.cid}: bad public key in the roster: {e}") from None
        ids = sorted(entries)
        xs = [v + 1 for v in ids]
        # shares[i] = (share of s_u^SK, share of b_u) for holder ids[i] (two polynomials each)
        shares = shamir.split([mask_keys.private_bytes(), s.seed], threshold=p.threshold, xs=xs)
        out = {}
        for v, (k_share, b_share) in zip(ids, shares, strict=True):
            if v == self.cid:
                s.held[v] = (k_share, b_share)
                continue
            key = self._agree(encryption_keys, v, 0, Purpose.SHARE_ENCRYPTION)
            s.channel_keys[v] = key
            plaintext = messages.SharePlaintext(self.cid, v, k_share, b_share).encode()
            out[v] = encrypt_share(key, plaintext, round=p.round, sender=self.cid, receiver=v)
        s.done = Stage.SHARE_KEYS
        return messages.encode_ciphertexts(out)

    # ------------------------------------------------------------- Round 2: MaskedInput

    def masked_input(self, inbox: bytes) -> bytes:
        """Decrypt the shares received (a share failing authentication is reported, the
        client does not mask with its sender, and the server will treat one of the two as
        dropped), then send
        ``y_u = x_u + PRG(b_u) + sum_{v in U2 ∩ N(u), not reported} sign(u, v) PRG(s_{u,v})``
        ``(mod 2^bits)`` with ``s_{u,v} = HKDF(X25519(s_u^SK, s_v^PK))``."""
        self._advance(Stage.MASKED_INPUT, Stage.SHARE_KEYS)
        s, p = self.state, self.params
        _, mask_keys = self._keys()
        received = messages.decode_ciphertexts(inbox, "Inbox")
        strangers = set(received) - (set(s.roster) - {self.cid})
        if strangers:
            raise ProtocolError(
                f"client {self.cid}: shares from non-neighbours {sorted(strangers)}"
            )
        if len(received) + 1 < p.threshold:
            raise ProtocolError(
                f"client {self.cid}: {len(received) + 1} clients left, fewer than t = {p.threshold}"
            )
        for u in sorted(received):
            try:
                share = self._open_share(u, received[u])
            except (ShareIntegrityError, ProtocolError):
                s.complaints.append(u)
                continue
            s.held[u] = (share.mask_key_share, share.seed_share)
        s.senders = sorted(received)
        y = self._input.copy()
        self._expander.add(y, s.seed)
        reported = set(s.complaints)
        for v in s.senders:
            if v in reported:
                continue  # the server removes no mask of this pair: add none
            seed = self._agree(mask_keys, v, 1, Purpose.PAIRWISE_MASK)
            self._expander.apply(y, seed, pairwise_sign(self.cid, v))
        np.bitwise_and(y, p.word_mask, out=y)
        s.done = Stage.MASKED_INPUT
        return messages.encode_masked(s.complaints, y)

    def _agree(self, mine: KeyPair, v: int, which: int, purpose: Purpose) -> bytes:
        """The key agreed with client ``v`` from our pair ``mine`` and ``v``'s advertised key
        number ``which`` (0: encryption, 1: masking); a failure is a :class:`ProtocolError`."""
        try:
            return agree(
                mine.private,
                self.state.roster[v][which],
                purpose=purpose,
                round=self.params.round,
                a=self.cid,
                b=v,
            )
        except ValueError as e:
            raise ProtocolError(f"client {self.cid}: key agreement with {v}: {e}") from None

    def _open_share(self, sender: int, ciphertext: bytes) -> messages.SharePlaintext:
        s, p = self.state, self.params
        key = s.channel_keys[sender]
        plain = decrypt_share(key, ciphertext, round=p.round, sender=sender, receiver=self.cid)
        share = messages.SharePlaintext.decode(plain)
        if (share.sender, share.receiver) != (sender, self.cid):
            raise ShareIntegrityError(
                f"share names {share.sender} -> {share.receiver}, arrived {sender} -> {self.cid}"
            )
        return share

    # ------------------------------------------------------------- Round 3: Unmasking

    def unmask(self, survivors: bytes) -> bytes:
        """For each client whose shares it holds: the share of ``b_u`` if ``u`` survived
        (its input is in the sum), else the share of ``s_u^SK`` (its pairwise masks must be
        removed) — never both for one client, which is what keeps an input hidden."""
        self._advance(Stage.UNMASKING, Stage.MASKED_INPUT)
        s, p = self.state, self.params
        total, listed = messages.decode_survivors(survivors)
        alive = set(listed)
        if self.cid not in alive:
            raise ProtocolError(f"client {self.cid}: asked to unmask but not listed as a survivor")
        if not alive <= set(s.senders) | {self.cid}:
            raise ProtocolError(f"client {self.cid}: survivors it holds no shares of")
        if total < p.threshold:
            raise ProtocolError(
                f"client {self.cid}: {total} survivors, fewer than t = {p.threshold}"
            )
        reply: dict[int, tuple[ShareKind, Sequence[int]]] = {}
        for u, (k_share, b_share) in s.held.items():
            if u in alive:
                reply[u] = (ShareKind.SELF_MASK_SEED, b_share)
            else:
                reply[u] = (ShareKind.MASK_KEY, k_share)
        s.done = Stage.UNMASKING
        return messages.encode_unmasking(reply)


def _random_seed() -> bytes:
    return os.urandom(SEED_BYTES)


__all__ = ["SecAggClient"]
