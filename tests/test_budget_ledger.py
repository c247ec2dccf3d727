"""Ledger.epsilons_with / epsilon_with: the epsilon a party would have if events were added,
checked against Opacus' accountant stepped independently and against the ledger after the
events are really recorded."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from privfl.errors import PrivflError
from privfl.ledger import SERVER, Ledger, PrivacyEvent, Unit, client_party


def _event(party=SERVER, sigma=1.0, q=0.1, steps=1, round=1, sensitivity=1.0):
    return PrivacyEvent(sigma, q, steps, Unit.USER.value, party, round, sensitivity=sensitivity)


def test_epsilon_with_equals_opacus_after_the_planned_step_and_leaves_the_ledger_alone():
    ledger = Ledger(delta=1e-5)
    for r in range(1, 6):
        ledger.record(_event(round=r))
    planned = [_event(round=6)]
    acc = RDPAccountant()
    for _ in range(6):
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
    expected = acc.get_epsilon(delta=1e-5)
    assert ledger.epsilon_with(planned, party=SERVER) == pytest.approx(expected, rel=1e-9)
    assert ledger.epsilons_with(planned) == {SERVER: pytest.approx(expected, rel=1e-9)}
    assert len(ledger.events) == 5  # nothing recorded
    ledger.record(planned[0])
    assert ledger.epsilon() == pytest.approx(expected, rel=1e-9)


def test_epsilons_with_answers_each_planned_party_including_new_ones():
    ledger = Ledger(delta=1e-5)
    ledger.record(_event(client_party(0), sigma=2.0, q=1.0, sensitivity=2.0))
    planned = [
        _event(client_party(0), sigma=2.0, q=1.0, round=2, sensitivity=2.0),
        _event(client_party(1), sigma=2.0, q=1.0, round=2, sensitivity=2.0),
    ]
    eps = ledger.epsilons_with(planned)
    acc0, acc1 = RDPAccountant(), RDPAccountant()
    for _ in range(2):
        acc0.step(noise_multiplier=1.0, sample_rate=1.0)  # sigma / sensitivity
    acc1.step(noise_multiplier=1.0, sample_rate=1.0)
    assert eps[client_party(0)] == pytest.approx(acc0.get_epsilon(delta=1e-5), rel=1e-9)
    assert eps[client_party(1)] == pytest.approx(acc1.get_epsilon(delta=1e-5), rel=1e-9)
    assert eps[client_party(0)] > eps[client_party(1)]
    assert ledger.epsilon_with([], party=client_party(7)) == 0.0


def test_planned_events_are_checked_like_recorded_ones_and_zero_noise_is_infinite():
    ledger = Ledger(delta=1e-5)
    with pytest.raises(PrivflError, match="sample_rate"):
        ledger.epsilons_with([_event(q=0.0)])
    assert math.isinf(ledger.epsilon_with([_event(sigma=0.0)], party=SERVER))
