"""Who holds which key: the server and the clients only ever have a public context."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
import torch
from conftest import small_config

from privfl.defenses.he import (
    CKKS_PRESETS,
    CiphertextError,
    CKKSScheme,
    ClientEncryptor,
    ClientKeys,
    HEChannel,
    HEServer,
    KeyHolder,
    Preset,
    TooFewClientsError,
    load_public_context,
)
from privfl.defenses.he.envelope import MessageKind, key_id, read_envelope
from privfl.errors import PrivflError
from privfl.federation import Federation
from privfl.update import UpdateBatch

SCHEME = CKKSScheme(CKKS_PRESETS[Preset.FAST])


def _reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` through attributes, slots and containers (classes,
    modules and functions are not entered: they hold code, not this object's state)."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | type(np) | type(_reachable)):
            continue
        seen[id(obj)] = obj
        if isinstance(obj, dict):
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set | frozenset):
            stack += list(obj)
        elif not isinstance(obj, str | bytes | int | float | bool | type(None) | np.ndarray):
            stack += list(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
    return list(seen.values())


def _assert_holds_no_secret(root: object) -> None:
    objects = _reachable(root)
    contexts = [o for o in objects if isinstance(o, ts.Context)]
    assert contexts, "the walk must find the party's own (public) context"
    assert all(not c.has_secret_key() and not c.is_private() for c in contexts)
    assert not any(isinstance(o, KeyHolder | HEChannel | ts.enc_context.SecretKey) for o in objects)


def test_server_and_clients_reach_no_secret_key():
    holder = KeyHolder(SCHEME)
    _assert_holds_no_secret(HEServer(SCHEME, holder.public_context))
    _assert_holds_no_secret(ClientEncryptor(SCHEME, holder.public_context))
    # The walk does find a secret where there is one.
    with pytest.raises(AssertionError):
        _assert_holds_no_secret(holder)


def test_server_of_a_configured_run_reaches_no_secret_key():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    assert isinstance(fed.stages.channel, HEChannel)
    _assert_holds_no_secret(fed.stages.channel.server)
    # Checkpoints carry no key material either: the channel is stateless.
    assert fed.state_dict()["stages"]["channel"] == {}


def test_decrypting_on_the_server_raises():
    holder = KeyHolder(SCHEME)
    server = HEServer(SCHEME, holder.public_context)
    public = ts.context_from(server.public_context)
    vector = ts.ckks_vector(public, [1.0, 2.0])
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        ts.ckks_vector_from(server._context, vector.serialize()).decrypt()
    # The same bytes decrypt at the key holder.
    np.testing.assert_allclose(
        ts.ckks_vector_from(holder._context, vector.serialize()).decrypt(), [1, 2], atol=1e-5
    )


def test_a_private_context_is_refused_as_public():
    private = SCHEME.create_context().serialize(save_secret_key=True)
    with pytest.raises(PrivflError, match="holds a secret key"):
        load_public_context(private)
    with pytest.raises(PrivflError, match="not a serialized TenSEAL context"):
        load_public_context(b"junk")


def _round_messages(holder: KeyHolder, n: int, round: int = 1) -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(0)
    batch = UpdateBatch(
        client_ids=np.arange(n, dtype=np.int64),
        deltas=torch.from_numpy(rng.standard_normal((n, 10)).astype(np.float32)),
        weights=np.ones(n),
    )
    clients = ClientEncryptor(SCHEME, holder.public_context, enrol=holder.enrol)
    return list(zip(range(n), clients.encrypt(batch, round=round)[0], strict=True))


def test_key_holder_decrypts_only_this_rounds_whole_aggregate():
    holder = KeyHolder(SCHEME, min_clients=2)
    server = HEServer(SCHEME, holder.public_context)
    messages = _round_messages(holder, 3)
    aggregate = server.aggregate(messages, round=1, dim=10)
    # Refusals before anything is decrypted leave the round open ...
    with pytest.raises(CiphertextError, match="kind 1, expected 2"):  # a single client's update
        holder.decrypt(messages[0][1], round=1, dim=10, count=1)
    with pytest.raises(CiphertextError, match="for round 1, this is round 2"):
        holder.decrypt(aggregate, round=2, dim=10, count=3)
    with pytest.raises(CiphertextError, match="sums 3 updates, 4 were sent"):
        holder.decrypt(aggregate, round=1, dim=10, count=4)
    lone = server.aggregate(messages[:1], round=1, dim=10)
    with pytest.raises(TooFewClientsError, match="at least defense.he.min_clients = 2"):
        holder.decrypt(lone, round=1, dim=10)
    # ... the whole cohort's sum is decrypted, and then nothing else of that round.
    out = holder.decrypt(aggregate, round=1, dim=10)
    assert out.total_weight == 3 and out.contributors.tolist() == [0, 1, 2]
    with pytest.raises(CiphertextError, match="round 1 was already decrypted"):
        holder.decrypt(server.aggregate(messages[:2], round=1, dim=10), round=1, dim=10)
    with pytest.raises(CiphertextError, match="round 1 was already decrypted"):
        holder.decrypt(aggregate, round=1, dim=10)


def test_clients_without_keys_from_the_key_holder_cannot_send():
    holder = KeyHolder(SCHEME)
    clients = ClientEncryptor(SCHEME, holder.public_context)
    batch = UpdateBatch(np.arange(2), torch.zeros((2, 10)), np.ones(2))
    with pytest.raises(PrivflError, match="client 0 has no keys from the key holder"):
        clients.encrypt(batch, round=1)


def test_the_server_holds_no_client_key():
    # The server of a configured run, after a round, reaches neither the check key nor any
    # client's voucher key (nor the master they derive from), in any object or bytes.
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    record = fed.run_round()
    channel = fed.stages.channel
    holder = channel._key_holder
    secrets = {holder._check_key, holder._voucher_master}
    secrets |= {holder.enrol(c).voucher_key for c in record["clients"]}
    reached = _reachable(channel.server)
    assert not any(isinstance(o, ClientKeys) for o in reached)
    assert not any(isinstance(o, bytes) and o in secrets for o in reached)
    # The walk finds them where they are: in the clients' keys.
    assert any(isinstance(o, bytes) and o in secrets for o in _reachable(channel._clients))


def test_key_id_is_the_public_context_digest():
    holder = KeyHolder(SCHEME)
    env = read_envelope(
        _round_messages(holder, 1)[0][1],
        kind=MessageKind.UPDATE,
        scheme=SCHEME.code,
        key=key_id(holder.public_context),
        round=1,
        chunks=1,
    )
    assert env.key_id == holder.key_id != KeyHolder(SCHEME).key_id
