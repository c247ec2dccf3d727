"""CKKS (Cheon, Kim, Kim and Song, ASIACRYPT 2017) through TenSEAL, for add-only aggregation.

Everything cryptographic is TenSEAL/SEAL: key generation, encoding, public-key encryption,
homomorphic addition, decryption and serialization. This module chooses the parameters,
packs updates into slots and checks the ranges that CKKS itself cannot check.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
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
#: log2 of the standard deviation of the check polynomial's coefficients (fewer bits where the
#: primes are small): a forged aggregate passes the sum check with probability ~2^-41.
CHECK_COEFF_BITS = 40


def pow2_ceil(x: float) -> float:
    """The smallest power of two ``>= x`` (for ``x > 0``; 0 for ``x <= 0``)."""
    if not x > 0:
        return 0.0
    mantissa, exponent = math.frexp(x)  # x = mantissa * 2^exponent, 0.5 <= mantissa < 1
    return math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)


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

    def vector(self, context: ts.Context, values: np.ndarray) -> ts.CKKSVector:
        """One chunk as a TenSEAL CKKS vector (public-key encryption)."""
        return ts.ckks_vector(context, values.tolist())

    def check_plaintext(
        self, seal: sealapi.SEALContext, parms_id: list[int], rng: np.random.Generator
    ) -> sealapi.Plaintext:
        """``s_r``: complex Gaussian slot values encoded at scale 1, so that its coefficients
        are independent Gaussians of standard deviation ``2^b`` (``b`` =
        :data:`CHECK_COEFF_BITS`, or 10 bits below the smallest prime): the inverse canonical
        embedding maps slot values of standard deviation ``a`` per real and imaginary part to
        coefficients of ``a * sqrt(2 / N)``. Complex values: real ones would span only half
        the polynomials."""
        primes = seal.get_context_data(parms_id).parms().coeff_modulus()
        bits = min(CHECK_COEFF_BITS, min(q.bit_count() for q in primes) - 10)
        a = math.ldexp(math.sqrt(self.params.poly_modulus_degree / 2), bits)
        z = a * (rng.standard_normal(self.slots) + 1j * rng.standard_normal(self.slots))
        plain = sealapi.Plaintext()
        sealapi.CKKSEncoder(seal).encode(z.tolist(), parms_id, 1.0, plain)
        return plain

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

    def noise(self, count: int, peak: float) -> float:
        """A bound on the absolute error of every decrypted value of a sum of ``count`` fresh
        ciphertexts whose largest decrypted value is ``peak``: each summand's fresh-encryption
        noise, plus the decoding FFT's double-precision rounding relative to ``peak`` (taken
        up to a power of two)."""
        return count * self.params.noise_bound + pow2_ceil(peak) * DECODE_RELATIVE_ERROR

    def grid(self, count: int, peak: float) -> float:
        """The step the key holder rounds a decrypted sum to: the smallest power of two at
        least twice :meth:`noise`. A value on the grid (an integer weight) is then recovered
        exactly, and any value to within one step."""
        return pow2_ceil(2 * self.noise(count, peak))

    def decode(self, flat: np.ndarray, dim: int, count: int) -> Decoded:
        """``sum w_i delta_i / sum w_i`` after the range and padding checks, from the sums
        rounded to :meth:`grid` (see the comments)."""
        parts = unpack(flat, dim)
        peak = float(np.max(np.abs(flat), initial=0.0))
        noise = self.noise(count, peak)
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
        # The low-order bits of a CKKS decryption are its noise, a function of the secret key
        # (Li and Micciancio, Eurocrypt 2021): nothing below the grid leaves the key holder.
        grid = self.grid(count, peak)
        sums = np.round(flat[: dim + 1] / grid) * grid  # exact: grid is a power of two
        total = float(sums[dim])
        if not total > 0:
            raise CiphertextError(
                f"the decrypted total weight rounds to {total:.6g} (grid {grid:.3g}): no mean"
            )
        delta = (sums[:dim] / total).astype(np.float32)
        return Decoded(delta, total, grid)

    def describe(self) -> str:
        """The scheme, parameters and security level in one line."""
        return f"CKKS, {self.params.describe()}, {int(self.params.security)}-bit security"


__all__ = ["CHECK_COEFF_BITS", "CKKSScheme", "DECODE_RELATIVE_ERROR", "pow2_ceil"]
