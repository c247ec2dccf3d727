"""Token recovery from a client's update: the embedding-gradient leak.

A language model's first layer is an embedding ``E`` (``V x d``, one row per token). The
gradient of any loss with respect to ``E`` is non-zero only in the rows of the tokens that
occur in the batch's inputs, so the rows of ``E`` that a client's update changes are exactly
the tokens the client typed (Melis, Song, De Cristofaro and Shmatikov, "Exploiting Unintended
Feature Leakage in Collaborative Learning", IEEE S&P 2019, the leakage from the embedding
layer; FILM, Gupta et al. 2022, and LAMP, Balunovic et al. 2022, start from the same bag of
words). The server reads it off the update it receives; no optimization is needed.

What moves a row that no input used, and how the attack separates it (the server knows the
local training it prescribes, :class:`privfl.attacks.inversion.threat.InversionThreat`):

- plain SGD (momentum included, since a zero gradient leaves a zero momentum buffer): an
  unused row does not move at all; the recovered set is the rows with a non-zero update, and
  recall and precision are exactly 1;
- weight decay (and FedProx's proximal term beside it): an unused row decays deterministically,
  ``w_K = c w_0`` with ``c`` from :func:`idle_row_scale`; the attack subtracts that and keeps
  the rows left non-zero (up to float32 rounding, :func:`exact_tolerance`);
- noise on the update (DP-SGD, local or distributed DP, the ``noise`` what-if): every row
  moves. The attack estimates the noise's per-coordinate standard deviation from the update
  itself (the smallest median absolute deviation among its parameter tensors, robust to the
  coordinates that carry signal; :func:`noise_floor`) and keeps the rows whose norm exceeds the
  ``1 - fpr / V`` quantile of a pure-noise row's norm (``sigma * sqrt(chi2_d)``), so that at
  most ``fpr`` unused tokens are admitted in expectation. Recall then falls with the noise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import chi2
from torch import nn
from torch.func import functional_call

from privfl.attacks.inversion.config import InversionMethod
from privfl.attacks.inversion.labels import find_final_layer, label_counts
from privfl.attacks.inversion.observer import (
    AttackSettings,
    InversionObserver,
    Status,
    TargetKind,
    _Target,
    gradient_noise,
)
from privfl.attacks.inversion.simulate import (
    examples_used,
    num_local_steps,
    single_gradient_target,
)
from privfl.attacks.inversion.threat import InversionThreat
from privfl.client import LocalTraining, batch_schedule
from privfl.errors import ConfigError, PrivflError
from privfl.seeding import torch_generator
from privfl.stages import ObserverContext
from privfl.update import ServerView

if TYPE_CHECKING:
    from privfl.pipeline import RunEnd

log = logging.getLogger(__name__)

#: Family-wise rate of unused tokens the noise threshold admits, per update (``token_fpr``).
DEFAULT_FPR = 0.05

#: Recovered tokens written into a record's ``recovered_text``, at most.
MAX_SHOWN = 400


def find_embedding(model: nn.Module) -> tuple[str, nn.Embedding]:
    """The model's token embedding and the name of its weight among ``named_parameters()``:
    ``model.embedding`` when it is an ``nn.Embedding``, else the first one in
    ``model.modules()`` (the text contract of issue 23).

    Raises:
        PrivflError: the model has no ``nn.Embedding`` (it does not read tokens).
    """
    emb = getattr(model, "embedding", None)
    if not isinstance(emb, nn.Embedding):
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if emb is None:
        raise PrivflError(
            f"the model {type(model).__name__} has no nn.Embedding: the token attack reads the "
            "embedding layer's update"
        )
    for name, p in model.named_parameters():
        if p is emb.weight:
            return name, emb
    raise PrivflError("the embedding's weight is frozen: its update shows nothing")


def idle_row_scale(training: LocalTraining, steps: int) -> float:
    """``c`` such that an embedding row no input used ends local training at ``c * w_0``.

    Such a row's loss gradient is zero, so its step direction is weight decay plus FedProx's
    ``mu (w - w_0)``, through momentum: a linear recurrence on one scalar that is the same
    for every row (torch.optim.SGD's update, replayed on ``w_0 = 1``). Plain SGD gives 1.

    >>> idle_row_scale(LocalTraining(lr=0.1, weight_decay=0.5), 2)  # (1 - 0.05) ** 2
    0.9025
    """
    if not training.weight_decay:
        return 1.0  # no force on an unused row: the recurrence stays at w_0 exactly
    w, buf = 1.0, None
    for _ in range(steps):
        d = training.weight_decay * w + training.prox_mu * (w - 1.0)
        if training.momentum:
            buf = d if buf is None else training.momentum * buf + d
            d = buf
        w -= training.lr * d
    return w


def exact_tolerance(w0_rows: torch.Tensor, scale: float, steps: int) -> torch.Tensor:
    """Per row, float64 ``(V,)``: the norm float32 rounding may leave in an unused row once its
    decay ``(c - 1) w_0`` is subtracted. Zero when the row cannot move (``c = 1``: the
    update is exactly 0), else ``2 * eps * (steps + 1) * ||w_0 row||``: the rounding of
    ``steps`` float32 SGD steps, one ulp of the row per step. (Measured on this project's
    tests: unused rows stay under 0.11 of ``eps * (steps + 1) * ||w_0 row||``, used rows of
    the tiny LSTM's first positions above 50 of it.)"""
    if scale == 1.0:
        return torch.zeros(len(w0_rows), dtype=torch.float64)
    eps = float(torch.finfo(torch.float32).eps)
    return 2.0 * eps * (steps + 1) * w0_rows.double().norm(dim=1)


def noise_floor(blocks: list[torch.Tensor], min_size: int = 256) -> float:
    """The per-coordinate standard deviation of zero-mean noise on an update, estimated from
    the update itself: the smallest, over its parameter tensors of at least ``min_size``
    coordinates, of ``1.4826 * MAD`` (the median absolute deviation, consistent for the
    Gaussian). Noise of the DP mechanisms is i.i.d. over every coordinate while the signal
    concentrates in some tensors; signal only inflates a tensor's MAD, so the estimate errs
    high (fewer tokens claimed, never more). Falls back to all tensors when none is that big.
    """
    big = [b for b in blocks if b.numel() >= min_size] or blocks
    mads = [1.4826 * float((b.flatten() - b.flatten().median()).abs().median()) for b in big]
    return min(mads)


def noise_threshold(sigma: float, dim: int, rows: int, fpr: float = DEFAULT_FPR) -> float:
    """The row-norm threshold under per-coordinate noise ``sigma``: the ``1 - fpr / rows``
    quantile of ``sigma * sqrt(chi2(dim))``, the norm of a pure-noise row of ``dim``
    coordinates (a union bound over the ``rows`` rows)."""
    return sigma * math.sqrt(float(chi2.isf(fpr / rows, dim)))


def leaked_rows(residual: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Bool ``(T, V)``: the rows of ``residual`` (``(T, V, d)``) whose norm exceeds
    ``threshold`` (``(T, V)``, or anything that broadcasts to it)."""
    return residual.norm(dim=-1) > threshold


def token_scores(recovered: np.ndarray, true: np.ndarray) -> tuple[float, float, int]:
    """``(recall, precision, correct)`` of a recovered token set against the true one:
    ``|R & T| / |T|`` and ``|R & T| / |R|`` (1.0 for an empty recovered set, which claims
    nothing false; recall of an empty true set is 1.0)."""
    correct = int(np.intersect1d(recovered, true).size)
    recall = correct / true.size if true.size else 1.0
    precision = correct / recovered.size if recovered.size else 1.0
    return recall, precision, correct


def touched_examples(
    training: LocalTraining, n: int, seed: int, round_: int, client: int
) -> torch.Tensor:
    """Indices of the examples a client's plain-SGD local training touched this round, from
    its own schedule (:func:`privfl.client.batch_schedule` on the stream
    ``(seed, "client", round, client)``, as both engines draw it). For scoring only."""
    g = torch_generator(seed, "client", round_, client)
    parts = [
        torch.arange(n) if idx is None else idx
        for idx in batch_schedule(n, training.batch_size, training.epochs, training.steps, g)
    ]
    if not parts:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(torch.cat(parts))


def random_token_prediction(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    seq_len: int,
    vocab: int,
    generator: torch.Generator,
    samples: int = 64,
) -> torch.Tensor:
    """The global model's mean softmax on ``samples`` uniformly random token sequences,
    float64 ``(num_classes,)``: the attacker's stand-in for its mean prediction on the
    client's data (as :func:`privfl.attacks.inversion.labels.mean_prediction` for images)."""
    x = torch.randint(0, vocab, (samples, seq_len), generator=generator)
    with torch.no_grad():
        logits = functional_call(model, params, (x,))
    return torch.softmax(logits.double(), dim=1).mean(dim=0)


@dataclass(frozen=True)
class TokenAttackSettings:
    """How the token attack thresholds rows.

    Attributes:
        noisy: the protocol puts noise on the updates (DP on the client or in secure
            aggregation, or the ``noise`` what-if): threshold against :func:`noise_floor`.
            Otherwise rows are compared with :func:`exact_tolerance`.
        fpr: the family-wise rate of unused tokens admitted under noise.
        schedule_known: the clients train with :class:`privfl.client.SGDTrainer`'s schedule,
            so the examples they touched can be replayed for scoring (DP-SGD's Poisson lots
            cannot: all the client's examples count as true then).
    """

    noisy: bool = False
    fpr: float = DEFAULT_FPR
    schedule_known: bool = True


class TokenLeakObserver(InversionObserver):
    """The embedding-gradient token attack on the ServerView of selected rounds.

    Per attacked update (or the aggregate under secure aggregation; nothing under HE) one
    record with ``token_recall``, ``token_precision``, the counts, the threshold, and the
    bag-of-words estimate of the labels (the next tokens) from the head's bias gradient as
    ``label_accuracy`` (the overlap of the recovered and true label distributions). Target
    selection, the no-plaintext record and the ``noise`` what-if are
    :class:`InversionObserver`'s.
    """

    def __init__(
        self,
        *,
        rounds: frozenset[int],
        max_targets: int,
        threat: InversionThreat,
        seed: int,
        token: TokenAttackSettings,
        decode: Callable[[list[int]], str] | None = None,
        notes: tuple[str, ...] = (),
        noise: str = "none",
        noise_variance: float = 0.0,
    ) -> None:
        super().__init__(
            method=InversionMethod.TOKENS,
            settings=AttackSettings(iterations=1, lr=1.0),
            rounds=rounds,
            max_targets=max_targets,
            threat=threat,
            seed=seed,
            notes=notes,
            noise=noise,
            noise_variance=noise_variance,
        )
        self.token = token
        self.decode = decode

    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        """Records for ``attacks.json``: one per attacked update or aggregate, or one saying
        that the view holds no plaintext."""
        if view.round not in self.rounds:
            return []
        targets = self._targets(view)
        if targets is None:
            return [self._no_plaintext(view)]
        model = ctx.make_model()
        name, emb = find_embedding(model)
        params = ctx.spec.unflatten(view.global_params.detach().to(torch.float32))
        w0 = params[name]
        t0 = time.perf_counter()
        lr = self.threat.training.lr
        # (T, dim): every target's gradient equivalent G = -delta / lr, at once
        g = torch.stack([-t.delta.detach().to(torch.float32) / lr for t in targets])
        if self.noise != "none":
            g = g + torch.stack(
                [
                    gradient_noise(
                        self.noise,
                        self.noise_variance,
                        g.shape[1:],
                        torch_generator(
                            self.seed,
                            "inversion-noise",
                            view.round,
                            TargetKind.AGGREGATE.value if t.client is None else t.client,
                        ),
                    )
                    for t in targets
                ]
            )
        off = ctx.spec.offsets[ctx.spec.names.index(name)]
        v, d = w0.shape
        rows = g[:, off : off + v * d].reshape(len(targets), v, d)
        steps = [num_local_steps(t.threat.training, t.num_examples) for t in targets]
        scales = [idle_row_scale(t.threat.training, k) for t, k in zip(targets, steps, strict=True)]
        # an unused row's G is -(c - 1) / lr * w_0: subtract it (in float64: c - 1 is small)
        decay = torch.tensor([(c - 1.0) / lr for c in scales], dtype=torch.float64)
        residual = rows.double() + decay.view(-1, 1, 1) * w0.double()
        floors: list[float | None]
        if self.token.noisy:
            sigmas = [noise_floor(list(ctx.spec.unflatten(gi).values())) for gi in g]
            floors = list(sigmas)
            limits = torch.tensor(
                [noise_threshold(s, d, v, self.token.fpr) for s in sigmas], dtype=torch.float64
            ).view(-1, 1)
        else:
            floors = [None] * len(targets)
            limits = torch.stack(
                [exact_tolerance(w0, c, k) / lr for c, k in zip(scales, steps, strict=True)]
            )
        leaked = leaked_rows(residual, limits)
        thresholds = [float(x.max()) for x in limits]
        if emb.padding_idx is not None:
            leaked[:, emb.padding_idx] = False  # its gradient is zero by construction
        seconds = (time.perf_counter() - t0) / len(targets)
        return [
            self._token_record(
                view, t, leaked[i], thresholds[i], floors[i], g[i], model, params, ctx, emb, seconds
            )
            for i, t in enumerate(targets)
        ]

    def _token_record(
        self,
        view: ServerView,
        t: _Target,
        leaked: torch.Tensor,
        threshold: float,
        floor: float | None,
        g: torch.Tensor,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        ctx: ObserverContext,
        emb: nn.Embedding,
        seconds: float,
    ) -> dict[str, Any]:
        recovered = torch.nonzero(leaked).flatten().numpy()
        # Scoring only: the attack above never saw the ground truth.
        xs, ys = [], []
        for c in t.clients:
            truth = ctx.ground_truth(c)
            x, y = truth.x, truth.y
            if self.token.schedule_known:  # each client's own schedule, aggregate or not
                idx = touched_examples(self.threat.training, len(y), self.seed, view.round, c)
                x, y = x[idx], y[idx]
            xs.append(x)
            ys.append(y)
        true_x, true_y = torch.cat(xs), torch.cat(ys)
        true = torch.unique(true_x).numpy()
        if emb.padding_idx is not None:
            true = true[true != emb.padding_idx]
        recall, precision, correct = token_scores(recovered, true)
        record: dict[str, Any] = {
            "attack": self.method.value,
            "round": view.round,
            "client": t.client,
            "target": t.kind,
            "channel": view.channel,
            "status": Status.OK,
            "token_recall": recall,
            "token_precision": precision,
            "tokens_true": int(true.size),
            "tokens_recovered": int(recovered.size),
            "tokens_correct": correct,
            "vocabulary": int(leaked.numel()),
            "threshold": float(threshold),
            "threshold_rule": "noise floor" if self.token.noisy else "exact",
            "noise_floor": floor,
            "label_accuracy": self._bag_of_labels(t, g, model, params, ctx, true_y),
            "seconds": seconds,
            "examples": int(len(true_y)),
            "reported_examples": t.num_examples,
        }
        if self.decode is not None:
            record["recovered_text"] = self.decode([int(i) for i in recovered[:MAX_SHOWN]])
        if self.noise != "none":
            record["gradient_noise"] = {"kind": self.noise, "variance": self.noise_variance}
        if t.kind == TargetKind.AGGREGATE:
            record["clients"] = t.clients
        notes = [*self.notes, *([t.note] if t.note else [])]
        if not self.token.schedule_known:
            notes.append(
                "the clients' lots are Poisson-sampled (DP-SGD): every example of the client "
                "counts as true"
            )
        if notes:
            record["note"] = " ".join(notes)
        record["threat_model"] = t.threat.to_record()
        log.info(
            "tokens round %d %s: recall %.2f precision %.2f (%d of %d tokens)",
            view.round,
            "aggregate" if t.client is None else f"client {t.client}",
            recall,
            precision,
            correct,
            true.size,
        )
        return record

    def _bag_of_labels(
        self,
        t: _Target,
        g: torch.Tensor,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        ctx: ObserverContext,
        true_y: torch.Tensor,
    ) -> float | None:
        """The bag of next tokens from the head's bias gradient (Geng et al. 2021's label
        counts on the update read as one gradient over the examples the reported count says
        the client touched), scored as the overlap of its distribution with the true labels';
        None when the model's head has no bias."""
        try:
            layer = find_final_layer(model, ctx.num_classes)
        except PrivflError:
            return None
        if layer.bias is None or len(ctx.input_shape) != 1:
            return None
        training, n = t.threat.training, t.num_examples  # what the server knows
        grads = single_gradient_target(
            list(ctx.spec.unflatten(g).values()), list(params.values()), training, n
        )
        key = TargetKind.AGGREGATE.value if t.client is None else t.client
        gen = torch_generator(self.seed, "inversion-tokens", key)
        vocab = find_embedding(model)[1].num_embeddings
        mean_p = random_token_prediction(model, params, ctx.input_shape[0], vocab, gen)
        est = label_counts(grads, layer, examples_used(training, n), mean_p)
        # scoring only: the overlap of the two label distributions (the multiset overlap over
        # the count when both bags have the same size, as for one client's update; the
        # aggregate's count is assumed, so only its distribution is scored)
        truth = np.bincount(true_y.numpy(), minlength=len(est))
        if not len(true_y) or not est.sum():
            return None
        return float(np.minimum(est / est.sum(), truth / truth.sum()).sum())

    def finish(self, federation: RunEnd) -> None:
        """Nothing to draw: the records hold the recovered tokens."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def check_text_options(cfg: Any, data_name: str) -> None:
    """Reject the image attacks' options on text data (``[attack.inversion]`` ``cfg``).

    Raises:
        ConfigError: naming the option and why it does not apply to tokens.
    """
    image_only = {
        "iterations": "the token attack reads the update, it does not optimize",
        "lr": "the token attack reads the update, it does not optimize",
        "restarts": "the token attack reads the update, it does not optimize",
        "images": "text has no images to save (the records hold recovered_text)",
    }
    fields = type(cfg).model_fields
    for key, why in image_only.items():
        default = fields[key].get_default(call_default_factory=True)
        if key in cfg.model_fields_set and getattr(cfg, key) != default:
            raise ConfigError(
                f"attack.inversion.{key} applies only to the image attacks; {data_name} is "
                f"text (int64 tokens): {why}"
            )


__all__ = [
    "DEFAULT_FPR",
    "TokenAttackSettings",
    "TokenLeakObserver",
    "check_text_options",
    "exact_tolerance",
    "find_embedding",
    "idle_row_scale",
    "leaked_rows",
    "noise_floor",
    "noise_threshold",
    "random_token_prediction",
    "token_scores",
    "touched_examples",
]
