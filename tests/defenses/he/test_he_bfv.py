"""BFV on quantized integers: the sum is exact (bit for bit the plaintext sum of the same
integers), the mean is within the quantizer's bound, and the noise budget holds."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import tenseal.sealapi as sealapi
import torch
from conftest import small_config

from privfl.defenses.he import (
    BFV_DEFAULT,
    BFVParams,
    BFVScheme,
    ClientEncryptor,
    FixedPointCodec,
    HeadroomError,
    HEServer,
    KeyHolder,
    Rounding,
    mean_error_bound,
)
from privfl.defenses.he.bfv import CLIPPED
from privfl.defenses.he.params import bfv_fresh_noise_bits
from privfl.errors import ConfigError, PrivflError
from privfl.federation import Federation
from privfl.update import UpdateBatch

SMALL = BFVParams(4096, (60, 40), 30)  # 4096 integer slots


def _batch(seed: int, n: int, dim: int, scale: float = 0.3) -> UpdateBatch:
    rng = np.random.default_rng(seed)
    return UpdateBatch(
        client_ids=np.arange(n, dtype=np.int64) * 3,
        deltas=torch.from_numpy((scale * rng.standard_normal((n, dim))).astype(np.float32)),
        weights=rng.integers(1, 100, n).astype(np.float64),
    )


def _run(scheme: BFVScheme, batch: UpdateBatch, round: int = 1):
    holder = KeyHolder(scheme, min_clients=1)
    clients = ClientEncryptor(scheme, holder.public_context, enrol=holder.enrol)
    server = HEServer(scheme, holder.public_context)
    rng = lambda client: np.random.default_rng([client, round])  # noqa: E731
    messages, info = clients.encrypt(batch, round=round, rng=rng)
    dim = batch.deltas.shape[1]
    sent = zip(batch.client_ids.tolist(), messages, strict=True)
    aggregate = server.aggregate(sent, round=round, dim=dim)
    return holder.decrypt(aggregate, round=round, dim=dim, count=len(batch)), info


@pytest.mark.parametrize(("dim", "n"), [(200_000, 3), (5_000, 40)])
def test_decrypted_mean_is_exactly_the_plaintext_integer_sum(dim, n):
    seed = secrets.randbits(32)
    batch = _batch(seed, n, dim)
    scheme = BFVScheme(SMALL, clip=1.0, max_weight=100.0)
    out, info = _run(scheme, batch)
    # The plaintext computation of the same integers: quantize, add in int64, decode.
    values = FixedPointCodec(1.0, scheme.plain_modulus, n)
    weights = FixedPointCodec(1.0, scheme.plain_modulus, n)
    rho = batch.weights / 100.0
    x = np.clip(batch.deltas.numpy().astype(np.float64), -1, 1)
    a = sum(values.quantize(rho[i] * x[i]) for i in range(n)) / values.scale
    b = sum(int(weights.quantize(np.array([r]))[0]) for r in rho) / weights.scale
    np.testing.assert_array_equal(out.delta, (a / b).astype(np.float32), err_msg=f"seed {seed}")
    # ... and within the quantizer's bound of the float64 weighted mean of the clipped updates.
    ref = (rho[:, None] * x).sum(0) / rho.sum()
    bound = mean_error_bound(values, weights, b, n)
    assert np.max(np.abs(out.delta - ref)) <= bound + np.max(np.abs(ref)) * 2**-23
    assert np.linalg.norm(out.delta - ref) / np.linalg.norm(ref) <= 1e-6, seed
    assert info[CLIPPED] == int((batch.deltas.abs() > 1.0).sum()) > 0


def test_stochastic_rounding_is_unbiased_and_seeded():
    batch = _batch(0, 4, 20_000, scale=0.01)
    scheme = BFVScheme(
        BFVParams(4096, (60, 40), 24), max_weight=100.0, rounding=Rounding.STOCHASTIC
    )
    out, _ = _run(scheme, batch)
    again, _ = _run(scheme, batch)
    np.testing.assert_array_equal(out.delta, again.delta)  # the same streams, the same result
    rho = batch.weights / 100.0
    ref = (rho[:, None] * batch.deltas.numpy()).sum(0) / rho.sum()
    values, weights = scheme.codecs(4)
    err = out.delta - ref
    # per value |err| <= bound; unbiased: the mean error is ~ bound / sqrt(d), far below it
    bound = mean_error_bound(values, weights, rho.sum(), 4)
    assert np.max(np.abs(err)) <= bound * 1.01
    assert abs(err.mean()) < 0.05 * bound


@pytest.mark.parametrize("n_ring", [4096, 8192, 16384])
def test_fresh_noise_bound_is_above_seal_measurement(n_ring):
    # SEAL's invariant noise budget of a fresh encryption = data bits - t bits - noise bits.
    params = BFVParams(n_ring, (60, 40), 30)
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.BFV)
    parms.set_poly_modulus_degree(n_ring)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(n_ring, [60, 40]))
    parms.set_plain_modulus(sealapi.PlainModulus.Batching(n_ring, 30))
    ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    keygen = sealapi.KeyGenerator(ctx)
    pk = sealapi.PublicKey()
    keygen.create_public_key(pk)
    enc = sealapi.Encryptor(ctx, pk)
    dec = sealapi.Decryptor(ctx, keygen.secret_key())
    pt = sealapi.Plaintext()
    sealapi.BatchEncoder(ctx).encode(list(range(n_ring)), pt)
    budgets = []
    for _ in range(5):
        ct = sealapi.Ciphertext()
        enc.encrypt(pt, ct)
        budgets.append(dec.invariant_noise_budget(ct))
    measured_noise = params.data_bits - params.plain_modulus_bits - min(budgets)
    assert measured_noise <= bfv_fresh_noise_bits(n_ring) - 1  # at least a bit of margin


def test_largest_allowed_cohort_decrypts_exactly_and_one_more_is_refused():
    params = BFVParams(4096, (40, 30), 23)  # 40 - 23 - 9 - 1: sums of up to 2^7 = 128
    assert params.max_clients == 128
    scheme = BFVScheme(params, max_weight=1.0)
    n = params.max_clients
    batch = UpdateBatch(
        client_ids=np.arange(n, dtype=np.int64),
        deltas=torch.full((n, 4000), 0.999),
        weights=np.ones(n),
    )
    out, _ = _run(scheme, batch)  # worst case: every client at the top of the range
    values, weights = scheme.codecs(n)
    assert np.abs(out.delta - 0.999).max() <= mean_error_bound(values, weights, n, n)
    more = UpdateBatch(
        client_ids=np.arange(n + 1, dtype=np.int64),
        deltas=torch.zeros((n + 1, 10)),
        weights=np.ones(n + 1),
    )
    with pytest.raises(HeadroomError, match="allows sums of at most 128"):
        _run(scheme, more)


def test_weights_above_max_weight_are_refused():
    batch = _batch(0, 3, 10)
    top = f"{batch.weights.max():g}"
    with pytest.raises(PrivflError, match=f"set defense.he.max_weight to at least {top}"):
        _run(BFVScheme(SMALL, max_weight=batch.weights.max() - 1), batch)


def test_bfv_rounds_are_reproducible_and_their_bytes_exact():
    # BFV sums are exact and its 60-bit ciphertexts do not compress: a second federation (a
    # new key) gives the same model and the same metrics, upload bytes included; only the
    # public context's size varies (SEAL compresses its 50-bit part, which is random).
    cfg = small_config(defense={"he": {"scheme": "bfv"}})
    first, second = Federation(cfg), Federation(cfg)
    a, b = first.run_round(), second.run_round()
    assert torch.equal(first.params, second.params)
    assert a.pop("he_context_bytes") != 0 and b.pop("he_context_bytes") != 0
    assert a == b and a["he_clipped"] == 0
    # One ciphertext of 2 x 8192 64-bit words for the 2410 parameters: 4x float32 per slot,
    # times the unused slots.
    assert a["he_expansion"] == pytest.approx(2 * 8192 * 8 / (4 * first.spec.dim), rel=0.01)


@pytest.mark.parametrize(
    ("he", "match"),
    [
        ({"scheme": "bfv", "scale_bits": 30}, "scale_bits applies only when scheme = 'ckks'"),
        ({"scheme": "bfv", "preset": "fast"}, "preset applies only when scheme = 'ckks'"),
        ({"scheme": "ckks", "clip": 2.0}, "clip applies only when scheme = 'bfv'"),
        ({"scheme": "bfv", "plain_modulus_bits": 54}, "plain_modulus_bits must be in 20..53"),
        ({"scheme": "bfv", "plain_modulus_bits": 50}, "must be below every prime"),
        (
            {"scheme": "bfv", "plain_modulus_bits": 50, "coeff_mod_bit_sizes": [60, 60]},
            "leaves no noise budget",
        ),
    ],
)
def test_bfv_config_errors(he, match):
    with pytest.raises(ConfigError, match=match):
        small_config(defense={"he": he})


def test_default_bfv_parameters():
    assert (BFV_DEFAULT.slots, BFV_DEFAULT.max_clients, int(BFV_DEFAULT.security)) == (
        8192,
        512,
        256,
    )
