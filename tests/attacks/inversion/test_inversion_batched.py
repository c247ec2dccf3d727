"""Batched inversion: the targets of a round reconstructed in one optimization give each target
the numbers the per-target loop gives it (the loop is the oracle: each target alone, with the
same generator)."""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)

from privfl.attacks.inversion import (
    AttackSettings,
    InversionMethod,
    InversionObserver,
    InversionThreat,
    local_update,
)
from privfl.attacks.inversion import observer as observer_module
from privfl.attacks.inversion.inverting_gradients import (
    inverting_gradients,
    inverting_gradients_batched,
)
from privfl.attacks.inversion.simulate import can_batch, local_updates
from privfl.client import LocalTraining, SGDTrainer
from privfl.errors import PrivflError
from privfl.stages import ObserverContext
from privfl.update import GroundTruth, ServerView, Update, UpdateBatch

FIVE_STEPS = LocalTraining(lr=0.1, steps=5, batch_size=1)


@pytest.mark.parametrize(
    "training",
    [
        LocalTraining(lr=0.1, steps=1, batch_size=None),
        LocalTraining(lr=0.05, steps=5, batch_size=2, momentum=0.9, weight_decay=1e-3),
        LocalTraining(lr=0.05, steps=3, batch_size=None, prox_mu=0.5),
    ],
    ids=["one step", "chunks, momentum and weight decay", "fedprox"],
)
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft labels"])
def test_batched_replay_equals_the_replay_of_each_target(digits, training, soft):
    # The LeNet (convolutions under vmap): values and their gradient w.r.t. the candidates.
    g = torch.Generator().manual_seed(0)
    t, n = 3, 4
    x = torch.rand((t, n, 1, 8, 8), generator=g, requires_grad=True)
    y = (
        torch.softmax(torch.randn((t, n, 10), generator=g), -1)
        if soft
        else torch.randint(0, 10, (t, n), generator=g)
    )
    params = {k: v.detach() for k, v in digits.model.named_parameters()}
    kw = {"steps": training.steps, "batch_size": training.batch_size}
    got = local_updates(digits.model, params, x, y, training, **kw)
    (gx,) = torch.autograd.grad(sum((a**3).sum() for a in got), x)
    for i in range(t):
        xi = x[i].detach().clone().requires_grad_(True)
        ref = local_update(digits.model, params, xi, y[i], training, **kw)
        (gi,) = torch.autograd.grad(sum((a**3).sum() for a in ref), xi)
        for a, r in zip(got, ref, strict=True):
            torch.testing.assert_close(a[i], r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx[i], gi, rtol=1e-4, atol=1e-5)
    # the rows are different targets: a mix-up would not pass the comparison above
    assert not torch.allclose(got[0][0], got[0][1])


def _targets(case, rows, training=FIVE_STEPS):
    return [case.target(torch.tensor(r), training, seed=k) for k, r in enumerate(rows)]


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "one gradient"])
def test_batched_ig_follows_each_targets_own_trajectory(digits_mlp, replay):
    # three local steps replayed (FedAvg's multi-step update), two restarts
    targets = _targets(digits_mlp, [[0], [5], [9]], LocalTraining(lr=0.1, steps=3, batch_size=1))
    kw = {"iterations": 10, "restarts": 2, "tv": 0.0, "replay": replay}
    loop = [
        inverting_gradients(t, generator=torch.Generator().manual_seed(10 + i), **kw)
        for i, t in enumerate(targets)
    ]
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    batched = inverting_gradients_batched(targets, generators=gens, **kw)
    for a, b in zip(loop, batched, strict=True):
        assert torch.equal(a.labels, b.labels)
        torch.testing.assert_close(b.x, a.x, rtol=0, atol=1e-4)
        assert b.loss == pytest.approx(a.loss, rel=1e-3, abs=1e-6)
        assert b.iterations == a.iterations == 10
    assert not torch.allclose(batched[0].x, batched[1].x, atol=1e-2)


def test_batched_ig_with_tv_on_the_lenet(digits):
    targets = _targets(digits, [[0, 1], [5, 6]], LocalTraining(lr=0.1, steps=2, batch_size=1))
    kw = {"iterations": 10, "tv": 1e-2, "labels": [torch.tensor([0, 1]), torch.tensor([3, 7])]}
    loop = [
        inverting_gradients(
            t,
            generator=torch.Generator().manual_seed(i),
            labels=kw["labels"][i],
            iterations=10,
            tv=1e-2,
        )
        for i, t in enumerate(targets)
    ]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    batched = inverting_gradients_batched(targets, generators=gens, **kw)
    for a, b in zip(loop, batched, strict=True):
        torch.testing.assert_close(b.x, a.x, rtol=0, atol=1e-4)
        assert torch.equal(a.labels, b.labels)


def test_batched_ig_refuses_targets_that_cannot_share_a_replay(digits_mlp):
    one, two = _targets(digits_mlp, [[0], [1, 2]])
    gens = [torch.Generator(), torch.Generator()]
    with pytest.raises(PrivflError, match="same local training and number"):
        inverting_gradients_batched([one, two], generators=gens, iterations=1)
    with pytest.raises(PrivflError, match="one generator"):
        inverting_gradients_batched([one, one], generators=gens[:1], iterations=1)


def test_models_with_dropout_are_not_batched():
    assert can_batch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)))
    assert can_batch(torch.nn.Sequential(torch.nn.BatchNorm1d(2)))
    assert can_batch(torch.nn.Linear(2, 2)) is None


# ------------------------------------------------------------------------------ the observer


def _round(case, clients):
    updates = [
        Update(
            cid,
            SGDTrainer(FIVE_STEPS).train(
                case.model,
                case.spec,
                case.w0,
                case.x[idx],
                case.y[idx],
                torch.Generator(),
                client_id=cid,
                round=1,
            )[0],
            len(idx),
        )
        for cid, idx in clients.items()
    ]
    case.spec.load_into(case.model, case.w0)
    batch = UpdateBatch.stack(updates, case.spec.dim)
    ctx = ObserverContext(
        make_model=lambda: case.model,
        spec=case.spec,
        input_shape=tuple(case.x.shape[1:]),
        num_classes=case.num_classes,
        ground_truth=lambda cid: GroundTruth(cid, case.x[clients[cid]], case.y[clients[cid]]),
    )
    return ServerView(1, case.w0, batch.client_ids, updates=batch), ctx


def _ig_observer(case, **kw):
    return InversionObserver(
        method=InversionMethod.IG,
        settings=AttackSettings(iterations=12, lr=0.1, restarts=2, tv=0.0),
        rounds=frozenset({1}),
        max_targets=8,
        threat=InversionThreat(FIVE_STEPS, tuple(case.x.shape[1:]), case.num_classes),
        seed=0,
        **kw,
    )


def test_observer_records_are_those_of_the_per_target_loop(digits_mlp, monkeypatch):
    # Clients 3, 7 and 11 hold one example each (one batch); client 5 holds two (alone).
    clients = {3: [40], 5: [1, 2], 7: [20], 11: [30]}
    view, ctx = _round(digits_mlp, clients)
    calls: list[int] = []
    real = observer_module.inverting_gradients_batched

    def spy(targets, **kw):
        calls.append(len(targets))
        return real(targets, **kw)

    monkeypatch.setattr(observer_module, "inverting_gradients_batched", spy)
    batched = _ig_observer(digits_mlp, images=True).observe(view, ctx)
    assert calls == [3]
    monkeypatch.setattr(observer_module, "can_batch", lambda model: "forced loop")
    looped = _ig_observer(digits_mlp, images=True).observe(view, ctx)
    assert calls == [3]
    assert [r["client"] for r in batched] == [3, 5, 7, 11]
    for a, b in zip(looped, batched, strict=True):
        assert a.keys() == b.keys()
        assert a["labels"] == b["labels"] and a["examples"] == b["examples"]
        assert b["objective"] == pytest.approx(a["objective"], rel=1e-3, abs=1e-6)
        assert b["psnr"] == pytest.approx(a["psnr"], abs=0.05)
        torch.testing.assert_close(
            torch.tensor(b["images"]["reconstruction"]),
            torch.tensor(a["images"]["reconstruction"]),
            rtol=0,
            atol=1e-4,
        )


def test_batched_targets_each_get_their_progress_task(digits_mlp):
    class Recorder:
        def __init__(self):
            self.totals, self.advanced, self.removed = [], [], []

        def add_task(self, description, total, **fields):
            self.totals.append(total)
            self.advanced.append(0)
            return len(self.totals) - 1

        def advance(self, task, k):
            self.advanced[task] += k

        def remove_task(self, task):
            self.removed.append(task)

    view, ctx = _round(digits_mlp, {3: [40], 7: [20]})
    progress = Recorder()
    _ig_observer(digits_mlp).observe(view, replace(ctx, progress=progress))
    assert progress.totals == [24, 24] and progress.advanced == [24, 24]
    assert progress.removed == [0, 1]


# --------------------------------------------------------------------------- DLG's L-BFGS


def _rows_problem(rows: int, p: int):
    """Independent smooth problems, one per row (float64): a quadratic with a random
    well-conditioned matrix plus a quartic, so that L-BFGS needs many iterations; row 0 is a
    pure quadratic in one variable that L-BFGS solves in a couple of iterations and stops."""
    g = torch.Generator().manual_seed(3)
    m = torch.randn((rows, p, p), generator=g, dtype=torch.float64)
    a = m @ m.transpose(1, 2) / p + torch.eye(p, dtype=torch.float64)
    a[0] = torch.eye(p, dtype=torch.float64) * 0.5
    c = torch.randn((rows, p), generator=g, dtype=torch.float64)

    def f(x: torch.Tensor, i=slice(None)) -> torch.Tensor:
        quad = 0.5 * ((x[..., None, :] * a[i]).sum(-1) * x).sum(-1) - (c[i] * x).sum(-1)
        quartic = 0.1 * (x**4).sum(-1)
        return quad + torch.where(torch.arange(rows)[i] == 0, 0.0, quartic)

    x0 = torch.randn((rows, p), generator=g, dtype=torch.float64) * 2
    return f, x0


@pytest.mark.parametrize("history", [3, 100])
def test_row_lbfgs_is_torchs_lbfgs_on_each_row(history):
    # The oracle: torch.optim.LBFGS on each row alone (same defaults, small history so that
    # the oldest pairs are dropped). Float64, so the two agree to rounding.
    from privfl.attacks.inversion.lbfgs import RowLBFGS

    rows, p, steps = 4, 7, 4
    f, x0 = _rows_problem(rows, p)
    expected, evals = [], []
    for i in range(rows):
        x = x0[i].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, history_size=history)

        def closure(i=i, x=x, opt=opt):
            opt.zero_grad()
            loss = f(x, i)
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
        expected.append(x.detach())
        evals.append(opt.state[x]["func_evals"])
    x = x0.clone().requires_grad_(True)
    opt = RowLBFGS(x, lr=1.0, history_size=history)
    counted = torch.zeros(rows, dtype=torch.int64)

    def rows_closure(evaluated):
        counted.add_(evaluated.long())
        loss = f(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad

    everyone = torch.ones(rows, dtype=torch.bool)
    for _ in range(steps):
        opt.step(rows_closure, everyone)
    torch.testing.assert_close(x.detach(), torch.stack(expected), rtol=0, atol=1e-9)
    assert counted.tolist() == evals  # each row stopped its inner loops where torch did
    assert evals[0] < evals[1]  # the rows stopped at different points


def test_row_lbfgs_leaves_rows_that_do_not_step():
    from privfl.attacks.inversion.lbfgs import RowLBFGS

    f, x0 = _rows_problem(3, 5)
    x = x0.clone().requires_grad_(True)

    def closure(evaluated):
        loss = f(x)
        return loss.detach(), torch.autograd.grad(loss.sum(), x)[0]

    RowLBFGS(x).step(closure, torch.tensor([True, False, True]))
    assert torch.equal(x[1].detach(), x0[1]) and not torch.equal(x[2].detach(), x0[2])


@pytest.mark.parametrize("method", ["dlg", "idlg"])
def test_batched_dlg_follows_each_targets_own_trajectory(digits_mlp, method):
    # One L-BFGS step (up to 20 evaluations) from the same draws: each target's dummies,
    # labels and objective are the loop's, up to float32 rounding, which L-BFGS amplifies
    # (the algorithm itself is compared in float64 above); the targets differ by far more.
    from privfl.attacks.inversion.dlg import dlg, dlg_batched, idlg, idlg_batched

    alone, together = (dlg, dlg_batched) if method == "dlg" else (idlg, idlg_batched)
    targets = _targets(digits_mlp, [[0], [5], [9]], LocalTraining(lr=0.1, steps=1, batch_size=1))
    kw = {"iterations": 1, "restarts": 2}
    loop = [
        alone(t, generator=torch.Generator().manual_seed(20 + i), **kw)
        for i, t in enumerate(targets)
    ]
    gens = [torch.Generator().manual_seed(20 + i) for i in range(3)]
    batched = together(targets, generators=gens, **kw)
    for a, b in zip(loop, batched, strict=True):
        assert torch.equal(a.labels, b.labels) and a.iterations == b.iterations
        assert float((b.x - a.x).norm() / a.x.norm()) < 1e-3
        assert b.loss == pytest.approx(a.loss, rel=2e-2)
    assert not torch.allclose(batched[0].x, batched[1].x, atol=1e-2)


def test_models_that_cannot_be_batched_get_the_loop_exactly(digits_mlp, monkeypatch):
    # the submodules (the package's names dlg and inverting_gradients are the functions)
    dlg_module = importlib.import_module("privfl.attacks.inversion.dlg")
    ig_module = importlib.import_module("privfl.attacks.inversion.inverting_gradients")

    for module in (dlg_module, ig_module):
        monkeypatch.setattr(module, "can_batch", lambda model: "the model has dropout")
    targets = _targets(digits_mlp, [[0], [5]], LocalTraining(lr=0.1, steps=1, batch_size=1))
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    for alone, together in (
        (dlg_module.idlg, dlg_module.idlg_batched),
        (ig_module.inverting_gradients, ig_module.inverting_gradients_batched),
    ):
        batched = together(targets, generators=gens(), iterations=3)
        for t, g, b in zip(targets, gens(), batched, strict=True):
            a = alone(t, generator=g, iterations=3)
            assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
