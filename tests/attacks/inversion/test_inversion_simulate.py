"""The attacker's replay of local training reproduces privfl's client exactly (an independent
implementation: torch.optim.SGD on a module), so at the true data the multi-step objective
is zero."""

from __future__ import annotations

import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)

from privfl.attacks.inversion import (
    examples_used,
    local_update,
    num_local_steps,
    single_gradient_target,
)
from privfl.client import LocalTraining


@pytest.mark.parametrize(
    "training",
    [
        LocalTraining(lr=0.1, steps=1, batch_size=None),
        LocalTraining(lr=0.05, steps=4, batch_size=None),
        LocalTraining(lr=0.05, steps=3, batch_size=None, momentum=0.9, weight_decay=1e-3),
        LocalTraining(lr=0.05, steps=3, batch_size=None, prox_mu=0.5),
    ],
    ids=["one step", "four steps", "momentum and weight decay", "fedprox"],
)
def test_replay_equals_privfls_client(digits, training):
    idx = torch.arange(5)
    t = digits.target(idx, training)
    got = local_update(
        digits.model,
        t.params,
        digits.x[idx],
        digits.y[idx],
        training,
        steps=num_local_steps(training, 5),
        batch_size=training.batch_size,
        create_graph=False,
    )
    for g, w in zip(got, t.update, strict=True):
        torch.testing.assert_close(g, w, atol=2e-4, rtol=2e-3)


def test_replay_of_mini_batches_in_the_clients_order():
    # One epoch of batches of 2 over 6 examples: the client's permutation is the identity
    # when the generator's draw is replaced by an ordered schedule, which we emulate by
    # checking the replay against a hand-written loop.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    training = LocalTraining(lr=0.1, epochs=1, batch_size=2)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    got = local_update(model, params, x, y, training, steps=3, batch_size=2, create_graph=False)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for k in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(
            model(x[2 * k : 2 * k + 2]), y[2 * k : 2 * k + 2]
        ).backward()
        opt.step()
    for g, p, p0 in zip(got, model.parameters(), w0, strict=True):
        torch.testing.assert_close(g, -(p.detach() - p0) / 0.1, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("training", "n", "steps", "used"),
    [
        (LocalTraining(lr=0.1, steps=1, batch_size=1), 30, 1, 1),
        (LocalTraining(lr=0.1, steps=1, batch_size=None), 30, 1, 30),
        (LocalTraining(lr=0.1, epochs=2, batch_size=8), 30, 8, 30),
        (LocalTraining(lr=0.1, steps=3, batch_size=4), 30, 3, 12),
        (LocalTraining(lr=0.1, steps=3, batch_size=64), 5, 3, 5),
    ],
)
def test_steps_and_examples_used(training, n, steps, used):
    assert num_local_steps(training, n) == steps
    assert examples_used(training, n) == used


def test_single_gradient_target_is_exact_for_one_step_with_weight_decay(digits):
    training = LocalTraining(lr=0.1, steps=1, batch_size=None, weight_decay=0.01)
    idx = torch.arange(3)
    t = digits.target(idx, training)
    got = single_gradient_target(t.update, list(t.params.values()), training, 3)
    loss = torch.nn.functional.cross_entropy(digits.model(digits.x[idx]), digits.y[idx])
    want = torch.autograd.grad(loss, list(digits.model.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-4, rtol=2e-3)
