"""Packing and the envelope: hand-computed layouts, and every corruption is named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.defenses.he.envelope import (
    SERVER,
    Envelope,
    MessageKind,
    SchemeCode,
    key_id,
    read_envelope,
)
from privfl.defenses.he.errors import CiphertextError
from privfl.defenses.he.packing import chunk_count, pack, unpack
from privfl.errors import PrivflError

KEY = key_id(b"public context")


def test_pack_layout_by_hand():
    out = pack(np.array([1.0, -2.0, 0.5], dtype=np.float32), 4.0, slots=2)
    np.testing.assert_array_equal(out, [[4.0, -8.0], [2.0, 4.0]])  # [w*delta, w], no padding
    out = pack(np.array([1.0, -2.0], dtype=np.float32), 3.0, slots=2)
    np.testing.assert_array_equal(out, [[3.0, -6.0], [3.0, 0.0]])  # padded with a zero
    u = unpack(out.reshape(-1), dim=2)
    np.testing.assert_array_equal(u.weighted_sum, [3.0, -6.0])
    assert u.total_weight == 3.0 and u.padding.tolist() == [0.0]


@pytest.mark.parametrize(
    ("dim", "slots", "chunks"), [(1, 4, 1), (3, 4, 1), (4, 4, 2), (85002, 4096, 21)]
)
def test_chunk_count(dim, slots, chunks):
    assert chunk_count(dim, slots) == chunks


def _message(**overrides) -> bytes:
    fields = dict(
        kind=MessageKind.UPDATE,
        scheme=SchemeCode.CKKS,
        key_id=KEY,
        round=3,
        sender=7,
        count=1,
        chunks=(b"abc", b"defgh"),
        vouchers=((7, b"voucher"),),
    )
    return Envelope(**{**fields, **overrides}).to_bytes()


def _read(data: bytes, **overrides) -> Envelope:
    expect = dict(
        kind=MessageKind.UPDATE, scheme=SchemeCode.CKKS, key=KEY, round=3, chunks=2, sender=7
    )
    return read_envelope(data, **{**expect, **overrides})


def test_layout_by_hand():
    data = _message()
    header = 4 + 1 + 1 + 1 + 16 + 4 + 8 + 4 + 4 + 4  # ... count, chunks, vouchers
    assert data[:4] == b"PFHE" and data[4] == 2  # version 2: with vouchers
    table = 2 * 4 + (8 + 4)  # two chunk lengths, one (client, length) entry
    assert len(data) == header + table + len(b"abc" + b"defgh" + b"voucher") + 32
    assert data[header + table :][:15] == b"abcdefghvoucher"


def test_round_trip():
    env = _read(_message())
    assert env.chunks == (b"abc", b"defgh") and env.sender == 7 and env.count == 1
    assert env.vouchers == ((7, b"voucher"),)
    vouchers = tuple((c, bytes([c]) * c) for c in (4, 9, 1, 0, 2))  # one empty
    agg = read_envelope(
        _message(kind=MessageKind.AGGREGATE, sender=SERVER, count=5, vouchers=vouchers),
        kind=MessageKind.AGGREGATE,
        scheme=SchemeCode.CKKS,
        key=KEY,
        round=3,
        chunks=2,
    )
    assert agg.count == 5 and agg.sender == SERVER and agg.vouchers == vouchers


@pytest.mark.parametrize(
    ("data", "expect", "match"),
    [
        (_message()[:-1], {}, "truncated"),
        (_message()[:20], {}, "truncated"),
        (b"", {}, "truncated"),
        (_message() + b"x", {}, "trailing bytes"),
        (b"XXXX" + _message()[4:], {}, "not a privfl HE message"),
        (_message(key_id=key_id(b"other")), {}, "encrypted under another context"),
        (_message(round=2), {}, "for round 2, this is round 3"),
        (_message(sender=8), {}, "header names sender client 8"),
        (_message(kind=MessageKind.AGGREGATE), {}, "kind 2, expected 1"),
        (_message(chunks=(b"abc",)), {}, "1 ciphertexts, expected 2"),
        (_message(count=0, vouchers=()), {}, "sums 0 updates"),
        (_message(vouchers=()), {}, "0 voucher\\(s\\) for 1 update\\(s\\)"),
        (_message(count=2), {}, "1 voucher\\(s\\) for 2 update\\(s\\)"),
        (_message(vouchers=((8, b"v"),)), {}, "its voucher names client 8"),
        (
            _message(kind=MessageKind.AGGREGATE, count=2, vouchers=((1, b"a"), (1, b"b"))),
            {"kind": MessageKind.AGGREGATE},
            "names a client twice",
        ),
        ("not bytes", {}, "expected bytes"),
    ],
)
def test_every_mismatch_is_a_clear_error(data, expect, match):
    with pytest.raises(CiphertextError, match=match) as info:
        _read(data, **expect)
    assert isinstance(info.value, PrivflError)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_detected(position, bit):
    data = bytearray(_message())
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(CiphertextError):
        _read(bytes(data))
