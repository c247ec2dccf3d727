"""On digits, top-k 10% with error feedback ends within 0.05 of the plain run's accuracy with
at most a quarter of its bytes up (bytes measured from the serialized messages)."""

from __future__ import annotations

import pytest

import privfl

QUICKSTART = "examples/quickstart.toml"


def _pair(overrides: list[str]) -> tuple[privfl.RunResult, privfl.RunResult]:
    plain = privfl.run(QUICKSTART, out=None, overrides=overrides, progress=False)
    topk = privfl.run(
        QUICKSTART,
        out=None,
        overrides=[
            *overrides,
            "compression.method=topk",
            "compression.ratio=0.1",
            "compression.error_feedback=true",
        ],
        progress=False,
    )
    return plain, topk


def _check(plain: privfl.RunResult, topk: privfl.RunResult) -> None:
    d = plain.params.numel()
    k = round(0.1 * d)
    up_plain = sum(r["bytes_up"] for r in plain.metrics)
    up_topk = sum(r["bytes_up"] for r in topk.metrics)
    # each plain client sends 4d bytes, each top-k client k (2 + 4) bytes (uint16 indices)
    assert up_plain == sum(len(r["clients"]) for r in plain.metrics) * 4 * d
    assert up_topk == sum(len(r["clients"]) for r in topk.metrics) * 6 * k
    assert up_topk <= 0.25 * up_plain
    assert plain.final_accuracy - topk.final_accuracy <= 0.05
    assert topk.final_accuracy > 0.5  # it learned something


def test_topk_with_error_feedback_is_close_to_plain_at_a_quarter_of_the_bytes():
    plain, topk = _pair(["federation.rounds=12", "federation.local_epochs=1"])
    _check(plain, topk)


@pytest.mark.slow
def test_topk_quickstart_as_in_the_issue():
    """The issue's setting (20 rounds, 5 local epochs): 0.919 vs 0.908 here."""
    _check(*_pair([]))
