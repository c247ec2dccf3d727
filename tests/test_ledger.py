"""The ledger: events per party, grouping of identical histories, Opacus-equal epsilons,
ledger.json, and state round trips."""

from __future__ import annotations

import json

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from privfl.errors import PrivflError
from privfl.ledger import SERVER, Ledger, PrivacyEvent, Unit, client_party

DELTA = 1e-5


def _event(party=SERVER, sigma=1.0, q=0.1, steps=1, round=1, unit=Unit.USER, sensitivity=1.0):
    return PrivacyEvent(sigma, q, steps, unit.value, party, round, sensitivity=sensitivity)


def test_epsilon_equals_opacus_accountants_stepped_one_by_one():
    led = Ledger(delta=DELTA)
    rdp, prv = RDPAccountant(), PRVAccountant()
    for r in range(1, 31):
        sigma = 1.0 if r <= 20 else 1.5
        led.record(_event(sigma=sigma, q=0.05, steps=3, round=r))
        for _ in range(3):
            rdp.step(noise_multiplier=sigma, sample_rate=0.05)
            prv.step(noise_multiplier=sigma, sample_rate=0.05)
    assert led.epsilon() == pytest.approx(rdp.get_epsilon(DELTA), rel=1e-12)
    assert led.epsilon(accountant="prv") == pytest.approx(prv.get_epsilon(DELTA), rel=1e-9)
    assert led.history(SERVER) == ((1.0, 0.05, 60), (1.5, 0.05, 30))


def test_each_client_has_its_own_budget_and_identical_histories_share_the_result():
    led = Ledger(delta=DELTA)
    for r in range(1, 6):
        for c in range(60):
            if c % 3 == 0 or r % 2:  # two participation patterns
                q = 0.1 if c < 30 else 0.2  # and two client sizes
                led.record(_event(client_party(c), 1.1, q, 10, r, Unit.EXAMPLE))
    eps = led.epsilons()
    assert len(eps) == 60
    for c in (0, 1, 31, 33):
        h = led.history(client_party(c))
        acc = RDPAccountant()
        acc.history.extend(h)
        assert eps[client_party(c)] == pytest.approx(acc.get_epsilon(DELTA), rel=1e-12)
    assert eps[client_party(3)] == eps[client_party(0)]  # same size, same rounds
    assert eps[client_party(33)] > eps[client_party(3)]  # larger q spends more
    assert eps[client_party(0)] > eps[client_party(1)]  # more rounds spends more
    assert led.worst_party() in {client_party(c) for c in range(30, 60, 3)}


def test_sensitivity_two_means_half_the_effective_noise():
    a, b = Ledger(delta=DELTA), Ledger(delta=DELTA)
    a.record(_event(sigma=2.0, q=1.0, sensitivity=2.0))
    b.record(_event(sigma=1.0, q=1.0))
    assert a.epsilon() == pytest.approx(b.epsilon(), rel=1e-12)


def test_epsilon_by_round_is_cumulative_and_ends_at_the_total():
    led = Ledger(delta=DELTA)
    for r in range(1, 11):
        led.record(_event(round=r, q=0.2))
    curve = led.epsilon_by_round(party=SERVER)
    assert [r for r, _ in curve] == list(range(1, 11))
    assert all(b > a for (_, a), (_, b) in zip(curve, curve[1:], strict=False))
    assert curve[-1][1] == pytest.approx(led.epsilon(), rel=1e-12)


@pytest.mark.parametrize(
    "event,match",
    [
        (_event(sigma=-1.0), "noise_multiplier must be a finite number >= 0"),
        (_event(q=0.0), r"sample_rate must lie in \(0, 1\]"),
        (_event(q=1.5), r"sample_rate must lie in \(0, 1\]"),
        (PrivacyEvent(1.0, 0.1, 1, "household", SERVER, 1), "protects must be one of"),
    ],
)
def test_bad_events_are_refused(event, match):
    with pytest.raises(PrivflError, match=match):
        Ledger(delta=DELTA).record(event)


def test_bad_delta_is_refused():
    with pytest.raises(PrivflError, match=r"delta must lie in \(0, 1\), got 1.0"):
        Ledger(delta=1.0)


def test_json_round_trip_and_headline_figures():
    led = Ledger(delta=DELTA, accountant="rdp")
    for r in range(1, 4):
        led.record(_event(client_party(0), 1.0, 0.1, 20, r, Unit.EXAMPLE))
        led.record(_event(client_party(1), 1.0, 0.2, 20, r, Unit.EXAMPLE))
    data = json.loads(json.dumps(led.to_json()))
    assert data["worst_party"] == client_party(1)
    assert data["epsilon"] == pytest.approx(led.epsilon(party=client_party(1)))
    by = data["epsilon_by_accountant"]
    assert by["rdp_classic"] >= by["rdp"] >= by["prv"]
    assert set(data["accountant_notes"]) >= {"rdp", "prv", "gdp", "rdp_classic"}
    again = Ledger.from_json(data)
    assert again.epsilons() == led.epsilons()


def test_empty_ledger_claims_nothing():
    data = Ledger().to_json()
    assert data["events"] == [] and data["epsilon"] is None
    with pytest.raises(PrivflError, match="no privacy events"):
        Ledger(delta=DELTA).epsilon()


def test_zero_noise_is_written_as_infinite():
    led = Ledger(delta=DELTA)
    led.record(_event(sigma=0.0))
    data = json.loads(json.dumps(led.to_json()))
    assert data["epsilon"] == "inf" and float(data["epsilon"]) == float("inf")


def test_state_dict_round_trip():
    led = Ledger(delta=DELTA)
    led.record(_event(round=1))
    led.record(_event(round=2, sigma=2.0))
    other = Ledger(delta=DELTA)
    other.load_state_dict(led.state_dict())
    assert other.events == led.events and other.epsilon() == led.epsilon()
