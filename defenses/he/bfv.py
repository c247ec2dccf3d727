"""BFV (Brakerski 2012; Fan and Vercauteren 2012) through TenSEAL: exact aggregation of
fixed-point quantized updates.

Each client clips its update to ``[-clip, clip]``, scales it by ``rho = w / max_weight`` and
quantizes it with headroom for the cohort's sum (:class:`FixedPointCodec`, the quantizer of
secure aggregation), followed by its quantized ``rho`` in one more slot. BFV adds the integers
exactly modulo the prime plain modulus ``t``; the key holder divides the two decoded sums.
Unlike CKKS the sum is exact: the only error is the quantization's, bounded by
:func:`mean_error_bound`, and a BFV ciphertext packs ``N`` integers (CKKS ``N / 2`` reals), so
it costs half the bytes and half the encryption time per parameter.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
import torch

from privfl.defenses.he.envelope import SchemeCode
from privfl.defenses.he.errors import CiphertextError, HeadroomError
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.params import BFVParams
from privfl.defenses.he.scheme import ClientRng, Decoded, Encoding, HEScheme
from privfl.defenses.quantize import FixedPointCodec, Rounding
from privfl.errors import ConfigError, PrivflError
from privfl.update import UpdateBatch

#: Metric: update values clipped to [-clip, clip] this round (all clients together).
CLIPPED = "he_clipped"


def mean_error_bound(
    values: FixedPointCodec, weights: FixedPointCodec, total_weight: float, summands: int
) -> float:
    """Worst-case absolute error, per value, of the decoded weighted mean ``A / B`` against the
    weighted mean of the clipped updates.

    With ``A' = A + e_A`` and ``B' = B + e_B`` (the codecs' sum errors, ``|A / B| <= c``):
    ``|A' / B' - A / B| <= (|e_A| + c |e_B|) / (B - |e_B|)``.

    Args:
        values, weights: the codecs of the update slots and of the weight slot.
        total_weight: ``B``, the sum of ``rho_i`` (decoded).
        summands: ``n``, the clients summed.
    """
    e_a, e_b = values.error_bound(summands), weights.error_bound(summands)
    if total_weight <= e_b:
        return math.inf
    return (e_a + values.clip * e_b) / (total_weight - e_b)


class BFVScheme(HEScheme):
    """BFV with ``N`` integer slots per ciphertext and fixed-point quantized updates.

    Args:
        params: ring, primes and plain-modulus size.
        clip: each update value is clipped to ``[-clip, clip]`` (the count is reported).
        max_weight: the largest client weight; weights are scaled by ``1 / max_weight``.
        rounding: the quantizer's rounding (stochastic rounding is unbiased).
    """

    code = SchemeCode.BFV

    def __init__(
        self,
        params: BFVParams,
        *,
        clip: float = 1.0,
        max_weight: float = 1.0,
        rounding: Rounding = Rounding.NEAREST,
    ) -> None:
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"defense.he.clip must be a positive number, got {clip}")
        if not (max_weight > 0 and math.isfinite(max_weight)):
            raise ConfigError(f"defense.he.max_weight must be a positive number, got {max_weight}")
        self.params = params
        self.slots = params.slots
        self.clip, self.max_weight, self.rounding = float(clip), float(max_weight), rounding
        try:
            self.plain_modulus = sealapi.PlainModulus.Batching(
                params.poly_modulus_degree, params.plain_modulus_bits
            ).value()
        except (ValueError, RuntimeError) as e:
            raise ConfigError(
                f"defense.he: no batching plain modulus for {params.describe()}: {e}"
            ) from None

    def codecs(self, n: int) -> tuple[FixedPointCodec, FixedPointCodec]:
        """The codecs of the update slots and of the weight slot for a sum of ``n`` clients."""
        return (
            FixedPointCodec(self.clip, self.plain_modulus, n, self.rounding),
            FixedPointCodec(1.0, self.plain_modulus, n, Rounding.NEAREST),
        )

    def create_context(self) -> ts.Context:
        """A private BFV context (the key holder's)."""
        p = self.params
        try:
            return ts.context(
                ts.SCHEME_TYPE.BFV,
                poly_modulus_degree=p.poly_modulus_degree,
                plain_modulus=self.plain_modulus,
                coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                n_threads=1,
            )
        except ValueError as e:
            raise ConfigError(f"defense.he: SEAL rejects {p.describe()}: {e}") from None

    def encode(self, batch: UpdateBatch, rng: ClientRng) -> Encoding:
        """Each client's quantized ``rho * clip(delta)`` and ``rho`` in chunks, after the noise-
        budget and weight checks; ``rng(client)`` drives stochastic rounding."""
        n, dim = len(batch), batch.deltas.shape[1]
        if n > self.params.max_clients:
            raise HeadroomError(
                f"{n} clients: the BFV noise budget of {self.params.describe()} allows sums of "
                f"at most {self.params.max_clients}; lower plain_modulus_bits or add a prime"
            )
        w = batch.weights
        bad = (w < 0) | (w > self.max_weight * (1 + 1e-12))
        if bad.any():
            raise PrivflError(
                f"client(s) {batch.client_ids[bad].tolist()} have weights outside [0, "
                f"max_weight = {self.max_weight:g}]; set defense.he.max_weight to at least "
                f"{w.max():g}"
            )
        values, weights = self.codecs(n)
        clipped = int((torch.abs(batch.deltas) > self.clip).sum())
        rho = w / self.max_weight
        deltas, ids = batch.deltas.numpy(), batch.client_ids.tolist()
        stochastic = self.rounding is Rounding.STOCHASTIC

        def rows():  # type: ignore[no-untyped-def]
            chunks = chunk_count(dim, self.slots)
            for i in range(n):
                r = rng(int(ids[i])) if stochastic else None
                out = np.zeros(chunks * self.slots, dtype=np.int64)
                scaled = rho[i] * np.clip(deltas[i].astype(np.float64), -self.clip, self.clip)
                out[:dim] = values.quantize(scaled, r)
                out[dim] = weights.quantize(np.array([rho[i]]))[0]
                yield out.reshape(chunks, self.slots)

        return Encoding(rows(), {CLIPPED: clipped})

    def vector(self, context: ts.Context, values: np.ndarray) -> ts.BFVVector:
        """One chunk of integers as a TenSEAL BFV vector (public-key encryption)."""
        return ts.bfv_vector(context, values.tolist())

    def check_plaintext(
        self, seal: sealapi.SEALContext, parms_id: list[int], rng: np.random.Generator
    ) -> sealapi.Plaintext:
        """``s_r``: uniform slot values modulo ``t``, batch-encoded; batching is a bijection,
        so its coefficients are uniform modulo ``t`` (a forged aggregate passes the sum
        check with probability ``1 / t``)."""
        plain = sealapi.Plaintext()
        values = rng.integers(0, self.plain_modulus, self.slots, dtype=np.int64)
        sealapi.BatchEncoder(seal).encode(values.tolist(), plain)
        return plain

    def load(self, context: ts.Context, data: bytes, where: str) -> ts.BFVVector:
        """A BFV vector from bytes; one ciphertext of ``slots`` integers, else
        :class:`CiphertextError`."""
        try:
            vector = ts.bfv_vector_from(context, data)
            cts = vector.ciphertext()
        except (ValueError, RuntimeError) as e:
            raise CiphertextError(f"{where}: not a ciphertext of these parameters ({e})") from None
        sizes = [ct.size() for ct in cts]
        if vector.size() != self.slots or sizes != [2]:
            raise CiphertextError(
                f"{where}: {len(cts)} ciphertext(s) of {vector.size()} values (polynomials: "
                f"{sizes}); expected one of {self.slots} values, 2 polynomials"
            )
        return vector

    def decrypt(self, vector: ts.BFVVector) -> np.ndarray:
        """The slots' integers, centred in ``(-t/2, t/2]``, int64 ``(slots,)``."""
        return np.asarray(vector.decrypt(), dtype=np.int64)

    def decode(self, flat: np.ndarray, dim: int, count: int) -> Decoded:
        """``A / B``: the decoded sums of the update slots and of the weight slot, after checking
        that the padding is zero and ``0 < B <= count``."""
        values, weights = self.codecs(count)
        pad = flat[dim + 1 :]
        residues = np.mod(flat[: dim + 1], self.plain_modulus).astype(np.uint64)
        total = float(weights.decode(residues[dim:])[0])
        # An exact sum has zero padding and 0 < sum of rho_i <= count; a ciphertext under
        # another key decrypts to uniform residues modulo t.
        if np.any(pad != 0) or not 0 < total <= count + weights.error_bound(count):
            raise CiphertextError(
                f"the decrypted sum of {count} updates is not a sum of valid updates (non-zero "
                f"padding: {int(np.count_nonzero(pad))}; total weight {total:.6g}): a "
                "ciphertext was encrypted under another key or altered"
            )
        # Exact integers: BFV decryption leaks no noise (Li and Micciancio's attack is on
        # approximate schemes), so nothing is rounded here.
        delta = (values.decode(residues[:dim]) / total).astype(np.float32)
        return Decoded(delta, total * self.max_weight)

    def describe(self) -> str:
        """The scheme, parameters and security level in one line."""
        return (
            f"BFV, {self.params.describe()} (t = {self.plain_modulus}), clip {self.clip:g}, "
            f"{self.rounding.value} rounding, {int(self.params.security)}-bit security"
        )


__all__ = ["BFVScheme", "CLIPPED", "mean_error_bound"]
