"""CKKS (Cheon, Kim, Kim and Song, ASIACRYPT 2017) through TenSEAL, for add-only aggregation.

Everything cryptographic is TenSEAL/SEAL: key generation, encoding, public-key encryption,
homomorphic addition, decryption and serialization. This module chooses the parameters,
packs updates into slots and checks the ranges that CKKS itself cannot check.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts
import torch

from privfl.defenses.he.envelope import SchemeCode
from privfl.defenses.he.errors import CiphertextError, HeadroomError
from privfl.defenses.he.packing import pack, unpack
from privfl.defenses.he.params import CKKSParams
from privfl.defenses.he.scheme import ClientRng, Decoded, Encoding, HEScheme
from privfl.defenses.he.seal_context import single_prime_ckks_context
from privfl.errors import ConfigError
from privfl.update import UpdateBatch

#: A generous bound on the relative rounding error of SEAL's double-precision decoding FFT.
DECODE_RELATIVE_ERROR = 2.0**-40


class CKKSScheme(HEScheme):
    """CKKS with one ciphertext per ``N / 2`` values and client-side weight pre-scaling.

    Each client encrypts ``[w * delta, w]`` (see :mod:`privfl.defenses.he.packing`); the sum
    of ``n`` such vectors decrypts to ``[sum w_i delta_i, sum w_i]`` up to an absolute error of
    about ``sqrt(n) * 2^12 / Delta`` per value, and the key holder divides.

    Notes:
        CKKS decryption cannot tell an overflowed sum from a valid one: coefficients wrap
        modulo the data prime and decode to garbage. Overflow is therefore excluded before
        encryption (:meth:`check_headroom`): a slot's plaintext coefficient is at most
        ``Delta * max|value|`` (the inverse canonical embedding averages the slots), so
        ``n * max_i ||z_i||_inf < 2^headroom_bits`` guarantees the sum fits.
    """

    code = SchemeCode.CKKS

    def __init__(self, params: CKKSParams) -> None:
        self.params = params
        self.slots = params.slots
        self.scale = math.ldexp(1.0, params.scale_bits)
        self.bound = math.ldexp(1.0, params.headroom_bits)

    def create_context(self) -> ts.Context:
        """A private CKKS context with the scale set (the key holder's)."""
        p = self.params
        if not p.special_prime:
            return single_prime_ckks_context(
                p.poly_modulus_degree, p.coeff_mod_bit_sizes[0], self.scale
            )
        try:
            context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=p.poly_modulus_degree,
                coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                n_threads=1,
            )
        except ValueError as e:  # SEAL rejected the parameters (e.g. no such primes)
            raise ConfigError(f"defense.he: SEAL rejects {p.describe()}: {e}") from None
        context.global_scale = self.scale
        return context

    def encode(self, batch: UpdateBatch, rng: ClientRng) -> Encoding:
        """Each client's ``[w * delta, w]`` in chunks, after :meth:`check_headroom`; ``rng`` is
        unused."""
        self.check_headroom(batch)
        deltas, weights = batch.deltas.numpy(), batch.weights
        rows = (pack(deltas[i], float(weights[i]), self.slots) for i in range(len(batch)))
        return Encoding(rows)

    def check_headroom(self, batch: UpdateBatch) -> None:
        """Raise :class:`HeadroomError` unless ``n * max|w_i * delta_i| < 2^headroom_bits``
        (and the same for the weight slot) for every client ``i``."""
        n = len(batch)
        w = np.abs(batch.weights)
        peak = torch.abs(batch.deltas).amax(dim=1).to(torch.float64).numpy() * w
        peak = np.maximum(peak, w)  # the weight slot
        limit = self.bound / n
        over = np.flatnonzero(~(peak < limit))
        if len(over):
            i = int(over[np.argmax(peak[over])])
            raise HeadroomError(
                f"client {int(batch.client_ids[i])}: its weighted update reaches "
                f"|w * delta| = {peak[i]:.4g} (w = {batch.weights[i]:.6g}); with {n} clients the "
                f"sum may exceed 2^{self.params.headroom_bits} = {self.bound:.4g}, the range of "
                f"CKKS at {self.params.describe()}. Clip the updates, or choose "
                "defense.he.preset = 'high-precision' or a smaller scale_bits"
            )

    def encrypt(self, context: ts.Context, values: np.ndarray) -> bytes:
        """One chunk as a serialized TenSEAL CKKS vector (public-key encryption)."""
        return ts.ckks_vector(context, values.tolist()).serialize()

    def load(self, context: ts.Context, data: bytes, where: str) -> ts.CKKSVector:
        """A CKKS vector from bytes; one ciphertext of ``slots`` values at this scale, else
        :class:`CiphertextError`."""
        try:
            vector = ts.ckks_vector_from(context, data)
            cts = vector.ciphertext()
        except (ValueError, RuntimeError) as e:
            raise CiphertextError(f"{where}: not a ciphertext of these parameters ({e})") from None
        shape = [(ct.size(), ct.scale) for ct in cts]
        if vector.size() != self.slots or shape != [(2, self.scale)]:
            raise CiphertextError(
                f"{where}: {len(cts)} ciphertext(s) of {vector.size()} values (polynomials, "
                f"scale: {shape}); expected one of {self.slots} values, (2, 2^"
                f"{self.params.scale_bits})"
            )
        return vector

    def decrypt(self, vector: ts.CKKSVector) -> np.ndarray:
        """The slots' values, float64 ``(slots,)``."""
        return np.asarray(vector.decrypt(), dtype=np.float64)

    def decode(self, flat: np.ndarray, dim: int, count: int) -> Decoded:
        """``sum w_i delta_i / sum w_i`` after the range and padding checks (see the comments)."""
        parts = unpack(flat, dim)
        peak = float(np.max(np.abs(flat), initial=0.0))
        # Fresh-encryption noise of each summand, plus double-precision rounding of the
        # decoding FFT relative to the largest value.
        noise = count * self.params.noise_bound + peak * DECODE_RELATIVE_ERROR
        # An honest sum stays below the bound the clients checked; a ciphertext under another
        # key or with altered coefficients decodes to values near q / Delta (measured ~1e7 at
        # the default preset) in every slot, including the padding that must be zero.
        pad = float(np.max(np.abs(parts.padding), initial=0.0))
        if not (peak < self.bound + noise and pad <= noise and parts.total_weight > 0):
            raise CiphertextError(
                f"the decrypted sum of {count} updates is not a sum of valid updates (largest "
                f"value {peak:.3g}, bound {self.bound:.3g}; padding {pad:.3g}, noise bound "
                f"{noise:.3g}; total weight {parts.total_weight:.6g}): a ciphertext was "
                "encrypted under another key or altered"
            )
        delta = (parts.weighted_sum / parts.total_weight).astype(np.float32)
        return Decoded(delta, parts.total_weight)

    def describe(self) -> str:
        """The scheme, parameters and security level in one line."""
        return f"CKKS, {self.params.describe()}, {int(self.params.security)}-bit security"


__all__ = ["CKKSScheme"]
