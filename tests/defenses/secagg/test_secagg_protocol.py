"""The four-stage protocol: exact sums of the survivors under dropouts at every stage, aborts,
integrity of relayed shares, what the server can and cannot learn, the clients' state machine."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from privfl.defenses.secagg import shamir
from privfl.defenses.secagg.client import SecAggClient
from privfl.defenses.secagg.constants import STAGES, ShareKind, Stage
from privfl.defenses.secagg.errors import ProtocolError
from privfl.defenses.secagg.graph import NeighbourGraph, threshold_for
from privfl.defenses.secagg.protocol import run_protocol
from privfl.defenses.secagg.state import RoundParams


def _params(ids, t, length, bits=32, k=None, round=1, seed=0):
    ids = np.asarray(ids, dtype=np.int64)
    graph = (
        NeighbourGraph.complete(ids)
        if k is None
        else NeighbourGraph.harary(ids, k, np.random.default_rng(seed))
    )
    return RoundParams(round=round, graph=graph, threshold=t, length=length, bits=bits)


def _inputs(p: RoundParams, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**p.bits, size=(p.graph.size, p.length), dtype=np.uint64).astype(
        p.dtype
    )


def _expected(p: RoundParams, x: np.ndarray, survivors) -> np.ndarray:
    keep = np.isin(p.graph.ids, survivors)
    total = x[keep].astype(np.uint64).sum(axis=0, dtype=np.uint64)  # wraps mod 2^64
    return (total & np.uint64(2**p.bits - 1)).astype(p.dtype)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 11),
    length=st.integers(1, 40),
    fraction=st.floats(0.51, 1.0),
    bits=st.sampled_from([16, 24, 32, 40, 53]),
    data=st.data(),
)
def test_unmasked_sum_is_the_survivors_sum_or_a_justified_abort(n, length, fraction, bits, data):
    ids = sorted(data.draw(st.sets(st.integers(0, 500), min_size=n, max_size=n)))
    p = _params(ids, threshold_for(n, fraction), length, bits)
    x = _inputs(p, seed=n * 1000 + length)
    vanish = data.draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(STAGES)))
    r = run_protocol(p, x, vanish=vanish)
    # Complete graph: U_i shrinks by the clients vanishing at stage i; abort iff some |U_i| < t.
    alive, sizes = set(ids), []
    for stage in STAGES:
        alive -= {c for c, s in vanish.items() if s is stage}
        sizes.append(len(alive))
    if min(sizes) < p.threshold:
        assert r.total is None and r.abort is not None
        return
    assert r.abort is None
    expected_survivors = sorted(
        c for c in ids if vanish.get(c) in (None, Stage.UNMASKING)
    )  # a client vanishing at Unmasking already sent its masked input
    assert r.survivors.tolist() == expected_survivors
    np.testing.assert_array_equal(r.total, _expected(p, x, expected_survivors))


def _secaggplus_outcome(p: RoundParams, vanish) -> list[int] | None:
    """Who is aggregated under SecAgg+ (None: the round must abort), derived from the
    protocol's rules (Bell et al. 2020) independently of the implementation's bookkeeping."""
    t, g = p.threshold, p.graph
    ids = [int(i) for i in g.ids]
    holders = {u: {int(v) for v in g.holders(u)} for u in ids}
    gone = lambda stage: {c for c, s in vanish.items() if s is stage}  # noqa: E731
    advertised = set(ids) - gone(Stage.ADVERTISE_KEYS)
    if len(advertised) < t:
        return None
    u1 = set(advertised)
    while short := {u for u in u1 if len(holders[u] & u1) < t}:
        u1 -= short  # the server leaves out clients without t share-holders
    u2 = u1 - gone(Stage.SHARE_KEYS)
    if len(u1) < t or len(u2) < t:
        return None
    refused = {u for u in u2 if len(holders[u] & u2) < t}  # too few shares arrived: stop
    u3 = u2 - gone(Stage.MASKED_INPUT) - refused
    u4 = u3 - gone(Stage.UNMASKING)
    if len(u3) < t or len(u4) < t:
        return None
    # the survivors' masking graph must be connected (else unmasking reveals partial sums)
    reached, frontier = set(), [min(u3)]
    while frontier:
        reached.update(frontier)
        frontier = [v for u in frontier for v in holders[u] & u3 if v not in reached]
    if reached != u3:
        return None
    for u in u2:
        needed = u in u3 or any(v in u3 for v in holders[u] - {u})
        if needed and len(holders[u] & u4) < t:
            return None  # a self-mask seed or mask key cannot be rebuilt
    return sorted(u3)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5, 16),
    half_k=st.integers(1, 3),
    fraction=st.floats(0.51, 1.0),
    data=st.data(),
)
def test_secaggplus_sum_under_random_dropouts(n, half_k, fraction, data):
    ids = list(range(0, 3 * n, 3))
    k = 2 * half_k
    p = _params(ids, threshold_for(min(k, n - 1) + 1, fraction), 9, k=k, seed=n + k)
    x = _inputs(p, seed=n)
    vanish = data.draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(STAGES)))
    r = run_protocol(p, x, vanish=vanish)
    expected = _secaggplus_outcome(p, vanish)
    if expected is None:
        assert r.total is None and r.abort is not None
    else:
        assert r.abort is None, r.abort
        assert r.survivors.tolist() == expected
        np.testing.assert_array_equal(r.total, _expected(p, x, expected))


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("k", [None, 4], ids=["complete", "harary4"])
def test_dropouts_at_each_stage(stage, k):
    ids = list(range(10, 30, 2))
    p = _params(ids, 3, 257, k=k)
    x = _inputs(p, 3)
    vanish = {ids[1]: stage, ids[6]: stage}
    r = run_protocol(p, x, vanish=vanish)
    assert r.abort is None
    gone = set() if stage is Stage.UNMASKING else set(vanish)
    assert set(r.survivors.tolist()) == set(ids) - gone
    np.testing.assert_array_equal(r.total, _expected(p, x, r.survivors))
    assert r.vanished == vanish


def test_dropouts_at_every_stage_at_once_secaggplus():
    ids = list(range(40))
    p = _params(ids, 4, 1000, k=6, seed=5)
    x = _inputs(p, 4)
    vanish = {
        3: Stage.ADVERTISE_KEYS,
        11: Stage.SHARE_KEYS,
        17: Stage.MASKED_INPUT,
        29: Stage.MASKED_INPUT,
        33: Stage.UNMASKING,
    }
    r = run_protocol(p, x, vanish=vanish)
    assert r.abort is None
    assert set(r.survivors.tolist()) == set(ids) - {3, 11, 17, 29}
    np.testing.assert_array_equal(r.total, _expected(p, x, r.survivors))


@pytest.mark.parametrize("stage", STAGES)
def test_too_few_survivors_abort_with_a_reason(stage):
    ids = list(range(6))
    p = _params(ids, 5, 10)
    r = run_protocol(p, _inputs(p), vanish={0: stage, 1: stage})
    assert r.total is None and r.survivors.size == 0
    assert r.abort is not None and r.abort.stage == stage.value
    assert "fewer than the threshold t = 5" in str(r.abort)


def test_secaggplus_abort_when_a_neighbourhood_is_too_thin():
    # t = 3 of each client's 3 holders (k = 2): any dropout after sharing leaves a secret
    # that its neighbours cannot rebuild.
    ids = list(range(8))
    p = _params(ids, 3, 10, k=2, seed=1)
    r = run_protocol(p, _inputs(p), vanish={4: Stage.MASKED_INPUT})
    assert r.total is None and "fewer than t = 3" in str(r.abort)


class _Adversary:
    """A network adversary on the relay (or a malicious server) that replaces the ciphertext
    from ``sender`` to ``receiver``: with a bit-flipped copy, with a ciphertext from an
    earlier round, or with another sender's ciphertext to the same receiver."""

    def __init__(self, mode, sender, receiver, stash=None):
        self.mode, self.sender, self.receiver, self.stash = mode, sender, receiver, stash
        self.seen: dict[tuple[int, int], bytes] = {}

    def __call__(self, sender, receiver, ct):
        self.seen[(sender, receiver)] = ct
        if (sender, receiver) != (self.sender, self.receiver):
            return ct
        if self.mode == "flip":
            b = bytearray(ct)
            b[len(b) // 2] ^= 0x40
            return bytes(b)
        if self.mode == "swap":  # the relay runs senders in id order: 1 -> 5 came first
            return self.seen[(1, receiver)]
        return self.stash  # replay


@pytest.mark.parametrize("mode", ["flip", "replay", "swap"])
def test_forged_shares_fail_authentication_and_the_sender_is_dropped(mode):
    ids = list(range(1, 9))
    p = _params(ids, 4, 64, round=2)
    x = _inputs(p, 7)
    stash = None
    if mode == "replay":  # the ciphertext of the same slot, recorded in round 1
        recorder = _Adversary("none", -1, -1)
        run_protocol(_params(ids, 4, 64, round=1), x, relay=recorder)
        stash = recorder.seen[(3, 5)]
    r = run_protocol(p, x, relay=_Adversary(mode, 3, 5, stash))
    assert r.abort is None
    assert r.rejected.tolist() == [3]
    assert 3 not in r.survivors
    np.testing.assert_array_equal(r.total, _expected(p, x, [c for c in ids if c != 3]))


def test_too_many_forged_shares_abort():
    ids = list(range(5))
    p = _params(ids, 4, 8)
    flip_all = lambda s, r, ct: ct[:-1] + bytes([ct[-1] ^ 1]) if s in (0, 1) else ct  # noqa: E731
    r = run_protocol(p, _inputs(p), relay=flip_all)
    assert r.total is None and sorted(r.rejected.tolist()) == [0, 1]
    assert r.abort is not None and r.abort.stage == Stage.MASKED_INPUT.value


def test_a_masked_vector_is_uniform_and_uncorrelated_with_its_input():
    ids = list(range(5))
    d = 100_000
    p = _params(ids, 3, d)
    x = np.zeros((5, d), dtype=np.uint32)
    x[:, : d // 2] = 7  # a very non-uniform input: 0s and 7s
    x[0] = np.random.default_rng(0).integers(0, 100, size=d, dtype=np.uint32)
    r = run_protocol(p, x)
    y = r.masked.vectors[r.masked.client_ids.tolist().index(0)]
    # chi-square over the residues' top byte (256 bins of ~390)
    assert stats.chisquare(np.bincount(y >> 24, minlength=256)).pvalue > 1e-4
    assert abs(np.corrcoef(y.astype(float), x[0].astype(float))[0, 1]) < 5 / np.sqrt(d)
    # the test can fail: the unmasked input is far from uniform
    assert stats.chisquare(np.bincount(x[0] >> 24, minlength=256)).pvalue < 1e-12
    np.testing.assert_array_equal(r.total, _expected(p, x, ids))


def test_masks_differ_between_runs_but_the_sum_does_not():
    ids = list(range(4))
    p = _params(ids, 3, 50)
    x = _inputs(p, 9)
    a, b = run_protocol(p, x), run_protocol(p, x)
    assert not np.array_equal(a.masked.vectors, b.masked.vectors)  # fresh OS-random keys
    np.testing.assert_array_equal(a.total, b.total)


@pytest.fixture
def recorded(monkeypatch):
    """Runs the protocol and keeps the client and server objects for inspection."""
    import privfl.defenses.secagg.protocol as proto

    made: dict[str, list] = {"clients": [], "servers": []}

    class Client(proto.SecAggClient):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made["clients"].append(self)

    class Server(proto.SecAggServer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made["servers"].append(self)

    monkeypatch.setattr(proto, "SecAggClient", Client)
    monkeypatch.setattr(proto, "SecAggServer", Server)

    def run(*a, **k):
        r = run_protocol(*a, **k)
        return r, {c.cid: c for c in made["clients"]}, made["servers"][-1]

    return run


def test_t_minus_1_shares_of_a_seed_give_a_wrong_seed(recorded):
    ids = list(range(7))
    p = _params(ids, 4, 16)
    r, clients, _ = recorded(p, _inputs(p))
    assert r.abort is None
    seed = clients[5].state.seed
    held = {c + 1: clients[c].state.held[5][1] for c in ids}  # shares of b_5, x = id + 1
    xs = sorted(held)
    few = shamir.interpolate_at_zero({x_: held[x_] for x_ in xs[: p.threshold - 1]})
    assert not np.array_equal(few, shamir.to_limbs(seed))
    assert shamir.combine({x_: held[x_] for x_ in xs[-p.threshold :]}, threshold=4) == seed


def test_server_never_receives_both_secrets_of_a_client(recorded):
    ids = list(range(7))
    p = _params(ids, 4, 16)
    r, _, server = recorded(p, _inputs(p), vanish={2: Stage.MASKED_INPUT})
    assert r.abort is None and 2 not in r.survivors
    kinds: dict[int, set[ShareKind]] = {}
    for owner, kind in server.state.shares:
        kinds.setdefault(owner, set()).add(ShareKind(kind))
    assert all(len(k) == 1 for k in kinds.values())
    # the dropped client's mask key was rebuilt, never its self-mask seed; survivors the reverse
    assert kinds[2] == {ShareKind.MASK_KEY}
    assert all(kinds[c] == {ShareKind.SELF_MASK_SEED} for c in ids if c != 2)


def test_client_stages_run_only_in_order():
    # Flower's test_stage_transition: every (completed, called) pair; only the successor works.
    p = _params([0, 1, 2], 2, 4)
    calls = {
        Stage.ADVERTISE_KEYS: lambda c: c.advertise_keys(),
        Stage.SHARE_KEYS: lambda c: c.share_keys(b""),
        Stage.MASKED_INPUT: lambda c: c.masked_input(b""),
        Stage.UNMASKING: lambda c: c.unmask(b""),
    }
    for done, called in itertools.product([None, *STAGES], STAGES):
        client = SecAggClient(0, p, np.zeros(4, dtype=np.uint32))
        client.state.done = done
        successor = (
            STAGES[0]
            if done is None
            else (STAGES[done.index + 1] if done.index + 1 < len(STAGES) else None)
        )
        if called is successor:
            continue  # the valid transition (exercised end to end above)
        with pytest.raises(ProtocolError, match="after"):
            calls[called](client)


def test_clients_refuse_inconsistent_server_messages():
    from privfl.defenses.secagg import messages

    p = _params([0, 1, 2, 3], 3, 4)
    c = SecAggClient(0, p, np.zeros(4, dtype=np.uint32))
    own = c.advertise_keys()
    other = SecAggClient(1, p, np.zeros(4, dtype=np.uint32)).advertise_keys()
    with pytest.raises(ProtocolError, match="fewer than t"):
        c.share_keys(messages.encode_roster({0: own, 1: other}))
    with pytest.raises(ProtocolError, match="own keys"):
        c.share_keys(messages.encode_roster({0: other, 1: own, 2: own}))
    with pytest.raises(ProtocolError, match="truncated"):
        c.share_keys(b"\x00\x00\x00\x05")
