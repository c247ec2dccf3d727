"""Sample-level DP-SGD inside every client (Abadi et al. 2016, "Deep learning with differential
privacy", CCS, Algorithm 1), on Opacus' ``GradSampleModule`` and ``DPOptimizer``.

Each local step draws a Poisson batch (every local example independently with probability
``q = batch_size / n``), computes per-example gradients (Opacus), clips each to L2 norm C,
sums them, adds ``N(0, sigma^2 C^2 I)`` and divides by the expected batch size ``q n``
(Opacus' DPOptimizer). Every client is its own accountant: the trainer reports its ``q``,
sigma and steps in its metrics, and :class:`RecordExampleLevelSpending` (a client transform,
so in the main process whatever engine trained the clients) writes one ledger event per client
and round, party ``"client:<id>"``, unit: one example.

Opacus' ``PrivacyEngine`` is not used as a whole because it keeps its own accountant and data
loader; the ledger is privfl's single accountant and batches come from the run's seeded streams.
Opacus is imported inside the functions (seconds to import; plain runs must not pay for it).

:class:`SecureDPSGDTrainer` (``secure_rng = true``) draws the lots and the noise from the OS's
secure generator instead of the client's seeded stream (Opacus' ``secure_mode`` needs
torchcsprng, which has no build for current torch; the noise is hardened the same way, see
:func:`~privfl.seeding.secure_normal`). The local shuffles of plain training stay seeded:
they are not part of the mechanism.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from privfl.accounting import import_opacus
from privfl.client import LocalTrainer, LocalTraining
from privfl.device import generator_on
from privfl.errors import PrivflError
from privfl.ledger import PrivacyEvent, Unit, client_party
from privfl.seeding import secure_normal, secure_uniform
from privfl.stages import ClientTransform, RoundContext
from privfl.update import ParamSpec, UpdateBatch

GRAD_SAMPLE_MODES: tuple[str, ...] = ("ew", "hooks", "functorch")


@dataclass(frozen=True)
class ClientSchedule:
    """A client's DP-SGD schedule in one round.

    Attributes:
        sample_rate: q, the Poisson probability of each local example per step.
        steps: local steps (``local_steps``, or ``local_epochs * ceil(n / batch_size)``, the
            steps of the non-private client).
        expected_batch_size: ``q * n`` (= the configured batch size), Opacus' denominator.
    """

    sample_rate: float
    steps: int
    expected_batch_size: int


log = logging.getLogger(__name__)


def client_schedule(num_examples: int, training: LocalTraining) -> ClientSchedule:
    """The Poisson rate and step count of a client with ``num_examples`` examples."""
    if num_examples < 1:
        raise PrivflError("DP-SGD needs at least one local example per client")
    b = num_examples if training.batch_size is None else min(training.batch_size, num_examples)
    steps = (
        training.steps if training.steps is not None else training.epochs * -(-num_examples // b)
    )
    return ClientSchedule(b / num_examples, int(steps), b)


def check_model(model: nn.Module) -> None:
    """Raise a PrivflError when Opacus cannot compute per-example gradients of ``model``
    (``opacus.validators.ModuleValidator``), naming each problem and the fix."""
    import_opacus()  # first: Opacus' import-time logging.basicConfig is undone there
    from opacus.validators import ModuleValidator

    was_training = model.training
    model.train()
    errors = ModuleValidator.validate(model, strict=False)
    model.train(was_training)
    if errors:
        text = "; ".join(str(e) for e in errors)
        fix = (
            "replace BatchNorm with GroupNorm (opacus.validators.ModuleValidator.fix does it), "
            "and avoid modules with running statistics"
        )
        raise PrivflError(f"DP-SGD cannot train this model: {text}. Fix: {fix}")


class DPSGDTrainer(LocalTrainer):
    """A client's local training with DP-SGD (Opacus), the private counterpart of
    :class:`privfl.client.SGDTrainer` (same optimizer settings, FedProx term included).

    Args:
        training: lr, momentum, weight decay, epochs/steps, batch size, FedProx mu.
        clip: C, the per-example gradient L2 bound.
        noise_multiplier: sigma; the noise std is sigma * C.
        grad_sample_mode: Opacus' per-example gradient engine: "ew" (PyTorch's
            ExpandedWeights; the fastest on privfl's models, see benchmarks/perf/dp_overhead.py),
            "hooks" (module hooks, the most general) or "functorch" (torch.func vmap).
    """

    #: Lots and noise from the OS's secure generator instead of ``generator`` (see
    #: :class:`SecureDPSGDTrainer`).
    secure_rng: bool = False

    def __init__(
        self,
        training: LocalTraining,
        *,
        clip: float,
        noise_multiplier: float,
        grad_sample_mode: str = "ew",
    ) -> None:
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise PrivflError(
                f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}"
            )
        if not clip > 0:
            raise PrivflError(f"clip must be > 0, got {clip}")
        if not noise_multiplier >= 0:
            raise PrivflError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        self.training, self.clip = training, clip
        self.noise_multiplier, self.grad_sample_mode = noise_multiplier, grad_sample_mode
        self._checked: set[int] = set()
        self._modes: dict[int, str] = {}

    def train(
        self,
        model: nn.Module,
        spec: ParamSpec,
        global_params: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        *,
        client_id: int,
        round: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        import_opacus()
        from opacus.grad_sample import wrap_model
        from opacus.optimizers import DPOptimizer

        if id(model) not in self._checked:
            check_model(model)
            self._modes[id(model)] = self._working_mode(model, x[:2], y[:2])
            self._checked.add(id(model))
        c = self.training
        n = len(y)
        plan = client_schedule(n, c)
        b = plan.expected_batch_size
        spec.load_into(model, global_params)
        model.train()
        mode = self._modes.get(id(model), self.grad_sample_mode)
        gsm = wrap_model(model, mode, batch_first=True, loss_reduction="mean")
        layouts = _standard_conv_inputs(model) if mode == "hooks" else []
        try:
            params = [p for p in model.parameters() if p.requires_grad]
            sgd = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
            # Secure: Opacus adds no noise of its own; the noise, drawn from the OS, is added
            # below to the scaled gradient (N(0, (sigma C)^2) / B: the same mechanism).
            opt = DPOptimizer(
                sgd,
                noise_multiplier=0.0 if self.secure_rng else self.noise_multiplier,
                max_grad_norm=self.clip,
                expected_batch_size=plan.expected_batch_size,
                loss_reduction="mean",
                # Opacus draws the noise on the parameters' device (a GPU takes only its own
                # generators); the lots stay on the client's CPU stream.
                generator=generator_on(params[0].device, generator) if params else generator,
            )
            anchor = [p.detach().clone() for p in params] if c.prox_mu > 0 else None
            loss_sum, seen, clipped = 0.0, 0, 0
            with warnings.catch_warnings():
                # Opacus' hooks on a first layer whose input needs no gradient.
                warnings.filterwarnings("ignore", "Full backward hook", UserWarning)
                for _ in range(plan.steps):
                    # Poisson sampling (Abadi et al. 2016's "lot"; as Opacus' DPDataLoader).
                    idx = torch.nonzero(self._lot_draws(n, generator) < plan.sample_rate)[:, 0]
                    opt.zero_grad(set_to_none=True)
                    if len(idx):
                        loss = F.cross_entropy(gsm(x[idx]), y[idx])
                        loss.backward()
                        loss_sum += float(loss.detach()) * len(idx)
                        seen += len(idx)
                        clipped += _count_clipped(params, self.clip)
                    else:  # an empty lot still releases noise (and is accounted as a step)
                        for p in params:
                            p.grad_sample = torch.zeros(
                                (0, *p.shape), dtype=p.dtype, device=p.device
                            )
                    if opt.pre_step():  # clip, sum, add noise, scale: p.grad is private now
                        if self.secure_rng:
                            _add_secure_noise(params, self.noise_multiplier * self.clip / b)
                        if anchor is not None:  # FedProx's term is data-independent
                            for p, a in zip(params, anchor, strict=True):
                                p.grad.add_(p.detach() - a, alpha=c.prox_mu)
                        sgd.step()
            opt.zero_grad(set_to_none=True)
        finally:
            for handle in layouts:
                handle.remove()
            gsm._close()  # remove Opacus' hooks and attributes: the engine reuses the model
            for p in model.parameters():
                if hasattr(p, "summed_grad"):
                    del p.summed_grad
        delta = spec.flatten(model) - global_params
        return delta, {
            "loss": loss_sum / seen if seen else float("nan"),
            "steps": float(plan.steps),
            "dp_sample_rate": plan.sample_rate,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_steps": float(plan.steps),
            "dp_clipped_fraction": clipped / seen if seen else float("nan"),
        }

    def _working_mode(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
        """The configured ``grad_sample_mode``, or ``"functorch"`` when it is ``"ew"`` and
        PyTorch's ExpandedWeights fails on ``model`` (its convolution per-sample rule views
        a gradient that is not row-major, as with channels-last inputs, torch 2.13); found
        with one backward pass on two examples, logged once."""
        if self.grad_sample_mode != "ew" or len(y) == 0:
            return self.grad_sample_mode
        from opacus.grad_sample import wrap_model

        gsm = wrap_model(model, "ew", batch_first=True, loss_reduction="mean")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Full backward hook", UserWarning)
                F.cross_entropy(gsm(x), y).backward()
        except RuntimeError as e:
            log.warning(
                "defense.dp.grad_sample_mode = 'ew': PyTorch's ExpandedWeights fails on this "
                "model (%s); per-example gradients by 'functorch' instead (same numbers)",
                str(e).split(".")[0],
            )
            return "functorch"
        finally:
            gsm._close()
            for p in model.parameters():
                p.grad = None
                if hasattr(p, "grad_sample"):
                    del p.grad_sample
        return "ew"

    def _lot_draws(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` uniform draws of a Poisson lot (example ``j`` joins when draw ``j < q``)."""
        if self.secure_rng:
            return torch.from_numpy(secure_uniform(n))
        return torch.rand(n, generator=generator)


class SecureDPSGDTrainer(DPSGDTrainer):
    """:class:`DPSGDTrainer` whose Poisson lots and Gaussian noise come from the OS's secure
    generator (``[defense.dp] secure_rng = true``): nothing about them follows from the seed.

    The vectorized engine's batched DP-SGD draws from the seeded client streams, so it trains
    this trainer's clients sequentially (it vectorizes only :class:`DPSGDTrainer` itself).
    """

    secure_rng = True


def _add_secure_noise(params: Sequence[torch.Tensor], std: float) -> None:
    """``p.grad += N(0, std^2)`` per parameter, from :func:`~privfl.seeding.secure_normal`."""
    if std <= 0:
        return
    with torch.no_grad():
        for p in params:
            noise = secure_normal(tuple(p.grad.shape)).to(p.grad.device, p.grad.dtype)
            p.grad.add_(noise, alpha=std)


def _standard_conv_inputs(model: nn.Module) -> list[RemovableHandle]:
    """Forward pre-hooks that hand every 2-d and 3-d convolution of ``model`` its input in
    PyTorch's standard row-major layout (the same values; removed by the caller).

    Opacus 1.6's ``"hooks"`` per-example gradient of a convolution unfolds the layer's saved
    input with ``as_strided`` and row-major height and width strides
    (``opacus.utils.tensor_utils.unfold2d``/``unfold3d``), whatever the input's layout. A
    channels-last input, which PyTorch also infers for one-channel images stored with a unit
    channel stride (scikit-learn's digits here) and then passes on to every layer after the
    first convolution, gave per-example gradients 0.12 off on the digits CNN's second
    convolution, whose sum was 0.64 off the batch gradient: silently wrong clipping. Written
    by hand: the bug is Opacus'; ``"ew"`` and ``"functorch"`` are not affected."""
    return [
        m.register_forward_pre_hook(_row_major_input)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Conv3d)
    ]


def _row_major_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    # contiguous() copies a channels-last map; the flat view then gives row-major strides to
    # a map already in that order (a one-channel map with a unit channel stride), no copy.
    x = args[0]
    if not isinstance(x, torch.Tensor):
        return None
    return (x.contiguous().reshape(-1).view(x.shape), *args[1:])


def _count_clipped(params: Sequence[torch.Tensor], clip: float) -> int:
    """How many examples of the lot have a per-example gradient norm above ``clip`` (the norm
    over all layers, as Opacus' flat clipping computes it)."""
    with torch.no_grad():
        norms = torch.stack(
            [torch.linalg.vector_norm(p.grad_sample.flatten(1), dim=1) for p in params], dim=1
        )
        return int((torch.linalg.vector_norm(norms, dim=1) > clip).sum())


class ExampleLevelBudget:
    """What a DP-SGD round would spend (a :class:`~privfl.pipeline.BudgetPlan`): one event
    per client of the cohort, from its schedule (:func:`client_schedule` of its example
    count), exactly what :class:`RecordExampleLevelSpending` records after the round. Each
    client's events are its own (party ``"client:<id>"``), so a client whose budget is spent
    is retired without touching anyone else's.

    Args:
        sizes: examples per client, ``(clients,)``.
        training: the clients' local training (batch size, steps or epochs).
        noise_multiplier: sigma of every client.
    """

    def __init__(self, sizes: np.ndarray, training: LocalTraining, noise_multiplier: float) -> None:
        plans = [client_schedule(int(n), training) for n in sizes]  # once per client, not per round
        self.sample_rates = [p.sample_rate for p in plans]
        self.steps = [p.steps for p in plans]
        self.noise_multiplier = float(noise_multiplier)

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]:
        """The events of ``round`` if every client of ``clients`` trains (ids past the real
        clients, an audit's canaries, spend no tracked budget)."""
        n = len(self.steps)
        return [
            PrivacyEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rates[c],
                steps=self.steps[c],
                protects=Unit.EXAMPLE.value,
                party=client_party(c),
                round=round,
            )
            for c in map(int, clients)
            if c < n
        ]


class RecordExampleLevelSpending(ClientTransform):
    """Writes each DP-SGD client's privacy spending of the round into the ledger, from the
    ``dp_*`` figures its trainer reported (one event per client: party ``"client:<id>"``,
    unit: one example). Rows without them (canaries, a malicious client's own trainer) spend
    no tracked budget. Adds the example-weighted share of clipped per-example gradients."""

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        m = batch.metrics
        if len(batch) == 0 or "dp_steps" not in m:
            return batch
        for i, cid in enumerate(batch.client_ids):
            steps = m["dp_steps"][i]
            if not math.isfinite(steps):
                continue
            ctx.ledger.record(
                PrivacyEvent(
                    noise_multiplier=float(m["dp_noise_multiplier"][i]),
                    sample_rate=float(m["dp_sample_rate"][i]),
                    steps=int(steps),
                    protects=Unit.EXAMPLE.value,
                    party=client_party(int(cid)),
                    round=ctx.round,
                )
            )
        frac = m.get("dp_clipped_fraction")
        info = {}
        if frac is not None:
            ok = np.isfinite(frac)
            if ok.any():
                info["dp_clipped_fraction"] = float(np.average(frac[ok], weights=batch.weights[ok]))
        return replace(batch, info={**batch.info, **info})


__all__ = [
    "GRAD_SAMPLE_MODES",
    "ClientSchedule",
    "DPSGDTrainer",
    "ExampleLevelBudget",
    "RecordExampleLevelSpending",
    "SecureDPSGDTrainer",
    "check_model",
    "client_schedule",
]
