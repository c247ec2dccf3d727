"""The inversion attack as an observer of the round: it inverts whatever the ServerView shows.

- plaintext channel (any client-side defense included: clipping, local DP noise, DP-SGD):
  up to ``max_targets`` of the round's updates, one record each;
- secure aggregation: only the aggregate, inverted as one update of all the clients'
  examples (one record, ``client = None``);
- HE, or nothing visible: one record saying that no plaintext was available.

The attack uses only the view, the global model and the :class:`InversionThreat`;
``ObserverContext.ground_truth`` is called after the reconstruction, to score it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.attacks.inversion.config import InversionMethod
from privfl.attacks.inversion.dlg import dlg, dlg_batched, idlg, idlg_batched
from privfl.attacks.inversion.gallery import MAX_IMAGES, GalleryItem, plot_gallery
from privfl.attacks.inversion.inverting_gradients import (
    IG_TV,
    inverting_gradients,
    inverting_gradients_batched,
)
from privfl.attacks.inversion.metrics import score
from privfl.attacks.inversion.simulate import can_batch
from privfl.attacks.inversion.target import (
    Callback,
    InversionTarget,
    Reconstruction,
    batch_key,
)
from privfl.attacks.inversion.threat import InversionThreat
from privfl.errors import PrivflError
from privfl.seeding import numpy_rng, torch_generator
from privfl.stages import Observer, ObserverContext
from privfl.update import ServerView

if TYPE_CHECKING:
    from privfl.pipeline import RunEnd

log = logging.getLogger(__name__)


class Status(StrEnum):
    """A record's ``status``."""

    OK = "ok"
    NO_PLAINTEXT = "no plaintext available"


class TargetKind(StrEnum):
    """What a record inverted (its ``target``)."""

    UPDATE = "update"
    AGGREGATE = "aggregate"
    NONE = "none"


@dataclass(frozen=True)
class AttackSettings:
    """How long and how hard the attack optimizes (see :mod:`.config`)."""

    iterations: int
    lr: float
    restarts: int = 1
    tv: float = IG_TV
    threads: int = 1
    replay: bool = True


AttackFn = Callable[
    [InversionTarget, AttackSettings, torch.Generator, Callback | None], Reconstruction
]


def _run_dlg(
    t: InversionTarget, s: AttackSettings, g: torch.Generator, cb: Callback | None
) -> Reconstruction:
    return dlg(t, generator=g, iterations=s.iterations, lr=s.lr, restarts=s.restarts, callback=cb)


def _run_idlg(
    t: InversionTarget, s: AttackSettings, g: torch.Generator, cb: Callback | None
) -> Reconstruction:
    return idlg(t, generator=g, iterations=s.iterations, lr=s.lr, restarts=s.restarts, callback=cb)


def _run_ig(
    t: InversionTarget, s: AttackSettings, g: torch.Generator, cb: Callback | None
) -> Reconstruction:
    return inverting_gradients(
        t,
        generator=g,
        iterations=s.iterations,
        lr=s.lr,
        tv=s.tv,
        restarts=s.restarts,
        callback=cb,
        replay=s.replay,
    )


#: The attacks by method name.
ATTACKS: dict[InversionMethod, AttackFn] = {
    InversionMethod.DLG: _run_dlg,
    InversionMethod.IDLG: _run_idlg,
    InversionMethod.IG: _run_ig,
}


BatchedAttackFn = Callable[
    [list[InversionTarget], AttackSettings, list[torch.Generator], list[Callback | None]],
    list[Reconstruction],
]


def _run_dlg_batched(
    ts: list[InversionTarget],
    s: AttackSettings,
    gs: list[torch.Generator],
    cbs: list[Callback | None],
) -> list[Reconstruction]:
    return dlg_batched(
        ts, generators=gs, iterations=s.iterations, lr=s.lr, restarts=s.restarts, callbacks=cbs
    )


def _run_idlg_batched(
    ts: list[InversionTarget],
    s: AttackSettings,
    gs: list[torch.Generator],
    cbs: list[Callback | None],
) -> list[Reconstruction]:
    return idlg_batched(
        ts, generators=gs, iterations=s.iterations, lr=s.lr, restarts=s.restarts, callbacks=cbs
    )


def _run_ig_batched(
    ts: list[InversionTarget],
    s: AttackSettings,
    gs: list[torch.Generator],
    cbs: list[Callback | None],
) -> list[Reconstruction]:
    return inverting_gradients_batched(
        ts,
        generators=gs,
        iterations=s.iterations,
        lr=s.lr,
        tv=s.tv,
        restarts=s.restarts,
        callbacks=cbs,
        replay=s.replay,
    )


#: The attacks on several targets in one optimization, by method name: each target's result
#: is the one ``ATTACKS`` gives it alone, up to float rounding.
BATCHED_ATTACKS: dict[InversionMethod, BatchedAttackFn] = {
    InversionMethod.DLG: _run_dlg_batched,
    InversionMethod.IDLG: _run_idlg_batched,
    InversionMethod.IG: _run_ig_batched,
}


@dataclass(frozen=True)
class _Target:
    """One thing to invert this round, and whose data it came from (for scoring only)."""

    kind: TargetKind
    client: int | None
    clients: list[int]
    delta: torch.Tensor
    num_examples: int
    threat: InversionThreat
    note: str | None = None


@dataclass(frozen=True)
class _Case:
    """A target as the attack sees it, with the generator of its random draws."""

    spec: _Target
    target: InversionTarget
    generator: torch.Generator


def _advance(progress: Any, task: Any) -> Callback:
    return lambda k: progress.advance(task, k)


class InversionObserver(Observer):
    """Runs a gradient-inversion attack on the ServerView of selected rounds.

    Args:
        method: which attack.
        settings: its iterations, learning rate, restarts and TV weight.
        rounds: the rounds in which the server attacks.
        max_targets: plaintext updates attacked per round, at most (chosen at random from
            the stream ``(seed, "inversion-targets", round)``).
        threat: what the attacker knows besides the view.
        seed: root of the attack's random streams.
        notes: sentences added to every record (e.g. why central DP does not protect the
            updates this server sees).
        noise: ``"gaussian"`` or ``"laplace"``: noise of variance ``noise_variance`` added to
            each coordinate of every observed gradient equivalent ``-delta / lr`` before the
            attack (Zhu et al. 2019 §5.1, "noisy gradients"; a what-if without clipping or
            accounting), from the stream ``(seed, "inversion-noise", round, client)``;
            ``"none"``: the view as it is.
        images: add ``images`` to each record: ``original`` and ``reconstruction``, nested
            lists ``(D, *input_shape)`` in ``[0, 1]`` (reconstructions clipped, in the order
            they were matched to the originals), and ``psnr`` per image (see
            :func:`record_images`).
    """

    def __init__(
        self,
        *,
        method: InversionMethod,
        settings: AttackSettings,
        rounds: frozenset[int],
        max_targets: int,
        threat: InversionThreat,
        seed: int,
        notes: tuple[str, ...] = (),
        noise: str = "none",
        noise_variance: float = 0.0,
        images: bool = False,
    ) -> None:
        self.method = InversionMethod(method)
        self.settings = settings
        self.rounds = rounds
        self.max_targets = max_targets
        self.threat = threat
        self.seed = seed
        self.notes = notes
        if noise not in NOISE_KINDS:
            raise PrivflError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
        if noise != "none" and not noise_variance > 0:
            raise PrivflError(f"noise = {noise!r} needs noise_variance > 0, got {noise_variance}")
        self.noise, self.noise_variance, self.images = noise, noise_variance, images
        self.gallery: list[GalleryItem] = []

    # ----------------------------------------------------------------- the round

    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        """Records for ``attacks.json``: one per attacked update or aggregate, or one saying
        that the view holds no plaintext."""
        if view.round not in self.rounds:
            return []
        targets = self._targets(view)
        if targets is None:
            return [self._no_plaintext(view)]
        model = ctx.make_model().to(ctx.device)  # the attack optimises on the run's device
        cases = [self._case(view, t, model, ctx) for t in targets]
        results: dict[int, tuple[Reconstruction, float]] = {}
        for group in self._groups(cases, model):
            outs = self._reconstruct(view, [cases[i] for i in group], ctx.progress)
            results.update(zip(group, outs, strict=True))
        return [self._record(view, c.spec, *results[i], ctx) for i, c in enumerate(cases)]

    def _targets(self, view: ServerView) -> list[_Target] | None:
        batch = view.updates
        if batch is not None:
            n = len(batch)
            rows = np.arange(n)
            if n > self.max_targets:
                rng = numpy_rng(self.seed, "inversion-targets", view.round)
                rows = np.sort(rng.choice(n, size=self.max_targets, replace=False))
            return [
                _Target(
                    kind=TargetKind.UPDATE,
                    client=int(batch.client_ids[i]),
                    clients=[int(batch.client_ids[i])],
                    delta=batch.deltas[i],
                    num_examples=int(batch.weights[i]),
                    threat=self.threat,
                )
                for i in rows
            ]
        if view.aggregate is not None:
            return [self._aggregate_target(view)]
        return None

    def _aggregate_target(self, view: ServerView) -> _Target:
        """The aggregate read as one update: a virtual client holding the ``m * b`` examples
        the ``m`` clients used (``b`` = the prescribed batch size, or 1 for full batches whose
        size the view does not show), taking the prescribed number of full-batch steps."""
        training = self.threat.training
        per_client = training.batch_size or 1
        clients = [int(c) for c in view.client_ids]
        steps = training.steps if training.steps is not None else training.epochs
        virtual = replace(training, steps=steps, batch_size=None)
        n = max(1, len(clients) * per_client)
        note = (
            f"only the aggregate of {len(clients)} clients is visible; it is read as one "
            f"update of {n} examples ({per_client} per client assumed)"
        )
        return _Target(
            kind=TargetKind.AGGREGATE,
            client=None,
            clients=clients,
            delta=view.aggregate,  # type: ignore[arg-type]
            num_examples=n,
            threat=replace(self.threat, training=virtual),
            note=note,
        )

    def _case(
        self, view: ServerView, t: _Target, model: torch.nn.Module, ctx: ObserverContext
    ) -> _Case:
        """``t`` as the attack sees it: its (noised) gradient equivalent and its generator."""
        dev = ctx.device
        target = InversionTarget.from_delta(
            model, ctx.spec, view.global_params.to(dev), t.delta.to(dev), t.num_examples, t.threat
        )
        key = TargetKind.AGGREGATE.value if t.client is None else t.client
        if self.noise != "none":
            noise_gen = torch_generator(self.seed, "inversion-noise", view.round, key)
            target = replace(
                target,
                update=[
                    g + gradient_noise(self.noise, self.noise_variance, g.shape, noise_gen).to(dev)
                    for g in target.update
                ],
            )
        generator = torch_generator(self.seed, "inversion", view.round, key)
        return _Case(t, target, generator)

    def _groups(self, cases: list[_Case], model: torch.nn.Module) -> list[list[int]]:
        """The targets attacked together, in one batched optimization: those that share the
        local training and the number of reconstructed examples and local steps (the updates
        of a round's clients with equal example counts; the aggregate stays alone). Each
        target alone when the model cannot be batched (:func:`can_batch`)."""
        singles = [[i] for i in range(len(cases))]
        if len(cases) < 2:
            return singles
        reason = can_batch(model)
        if reason is not None:
            log.info("inversion targets attacked one at a time: %s", reason)
            return singles
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, c in enumerate(cases):
            # the aggregate's threat differs from the updates': it is never grouped with them
            key = (*batch_key(c.target), c.spec.kind == TargetKind.AGGREGATE)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _reconstruct(
        self, view: ServerView, cases: list[_Case], progress: Any
    ) -> list[tuple[Reconstruction, float]]:
        """The reconstructions of ``cases`` (one optimization when several) and the seconds
        each took (a batch's time shared equally among its targets)."""
        total = self.settings.iterations * self.settings.restarts
        tasks: list[Any] = []
        if progress is not None:
            for c in cases:
                t = c.spec
                label = TargetKind.AGGREGATE.value if t.client is None else f"client {t.client}"
                tasks.append(
                    progress.add_task(
                        f"{self.method.value} r{view.round} {label}", total=total, stats=""
                    )
                )
        callbacks: list[Callback | None] = [
            None if progress is None else _advance(progress, task) for task in tasks
        ] or [None] * len(cases)
        t0 = time.perf_counter()
        try:
            with _torch_threads(self.settings.threads):
                if len(cases) == 1:
                    c = cases[0]
                    recs = [
                        ATTACKS[self.method](c.target, self.settings, c.generator, callbacks[0])
                    ]
                else:
                    recs = BATCHED_ATTACKS[self.method](
                        [c.target for c in cases],
                        self.settings,
                        [c.generator for c in cases],
                        callbacks,
                    )
        finally:
            for task in tasks:
                progress.remove_task(task)
        seconds = (time.perf_counter() - t0) / len(cases)
        return [(rec, seconds) for rec in recs]

    def _record(
        self,
        view: ServerView,
        t: _Target,
        rec: Reconstruction,
        seconds: float,
        ctx: ObserverContext,
    ) -> dict[str, Any]:
        """The ``attacks.json`` record of one target's reconstruction, scored."""
        rec = replace(rec, x=rec.x.detach().cpu(), labels=rec.labels.cpu())
        # Scoring only: the attack above never saw the ground truth.
        truths = [ctx.ground_truth(c) for c in t.clients]
        true_x = torch.cat([g.x for g in truths])
        true_y = torch.cat([g.y for g in truths])
        s = score(rec.x, rec.labels, true_x, true_y, ctx.num_classes)
        self._keep(view.round, t, rec, true_x, s.matched, s.psnr_each)
        record: dict[str, Any] = {
            "attack": self.method.value,
            "round": view.round,
            "client": t.client,
            "target": t.kind,
            "channel": view.channel,
            "status": Status.OK,
            "psnr": s.psnr,
            "ssim": s.ssim,
            "mse": s.mse,
            "label_accuracy": s.label_accuracy,
            "seconds": seconds,
            "examples": int(len(rec.x)),
            "reported_examples": t.num_examples,
            "labels": rec.labels.tolist(),
            "objective": rec.loss,
            "iterations": rec.iterations,
        }
        if self.noise != "none":
            record["gradient_noise"] = {"kind": self.noise, "variance": self.noise_variance}
        if self.images:
            order = [int(j) for j in s.matched]
            record["images"] = {
                "original": true_x[order].detach().clamp(0, 1).tolist(),
                "reconstruction": rec.x.detach().clamp(0, 1).tolist(),
                "psnr": [float(p) for p in s.psnr_each],
            }
        if t.kind == TargetKind.AGGREGATE:
            record["clients"] = t.clients
        notes = [*self.notes, *([t.note] if t.note else [])]
        if notes:
            record["note"] = " ".join(notes)
        record["threat_model"] = t.threat.to_record()
        log.info(
            "%s round %d %s: PSNR %.1f dB, label accuracy %.2f (%.1f s)",
            self.method.value,
            view.round,
            TargetKind.AGGREGATE.value if t.client is None else f"client {t.client}",
            s.psnr,
            s.label_accuracy,
            seconds,
        )
        return record

    def _no_plaintext(self, view: ServerView) -> dict[str, Any]:
        return {
            "attack": self.method.value,
            "round": view.round,
            "client": None,
            "target": TargetKind.NONE,
            "channel": view.channel,
            "status": Status.NO_PLAINTEXT,
            "psnr": None,
            "ssim": None,
            "mse": None,
            "label_accuracy": None,
            "seconds": 0.0,
            "note": (
                f"the {view.channel!r} channel shows the server neither plaintext updates nor "
                "their aggregate: there is nothing to invert"
                + (" " + " ".join(self.notes) if self.notes else "")
            ),
            "threat_model": self.threat.to_record(),
        }

    # ------------------------------------------------------------- the PNG grid

    def _keep(
        self,
        round_: int,
        t: _Target,
        rec: Reconstruction,
        true_x: torch.Tensor,
        matched: np.ndarray,
        psnr_each: np.ndarray,
    ) -> None:
        who = "agg" if t.client is None else f"c{t.client}"
        for i in range(len(rec.x)):
            if len(self.gallery) >= MAX_IMAGES:
                return
            self.gallery.append(
                GalleryItem(
                    title=f"r{round_} {who}\n{psnr_each[i]:.1f} dB",
                    original=true_x[int(matched[i])].detach().clone(),
                    reconstruction=rec.x[i].detach().clamp(0, 1).clone(),
                )
            )

    def finish(self, federation: RunEnd) -> None:
        """Write ``plots/inversion.png`` (originals above reconstructions) to the run folder."""
        folder = federation.folder
        if folder is None:
            return
        plot_gallery(
            self.gallery,
            folder.plot_path("inversion"),
            title=f"{self.method.value}: originals (top) and reconstructions (bottom)",
        )

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The images kept for the PNG grid (so a resumed run's grid has them all)."""
        return {
            "gallery": [
                {"title": g.title, "original": g.original, "reconstruction": g.reconstruction}
                for g in self.gallery
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.gallery = [GalleryItem(**g) for g in state.get("gallery", [])]


#: The values of ``[attack.inversion] noise``.
NOISE_KINDS = ("none", "gaussian", "laplace")


def gradient_noise(
    kind: str, variance: float, shape: torch.Size, generator: torch.Generator
) -> torch.Tensor:
    """Zero-mean noise of per-coordinate ``variance``: Gaussian (std ``sqrt(variance)``) or
    Laplacian (scale ``sqrt(variance / 2)``), as Zhu et al. 2019 §5.1 add to the gradient.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = gradient_noise("laplace", 1e-2, torch.Size([200_000]), g)
    >>> round(float(x.var()), 3), round(float(x.mean()), 2)
    (0.01, 0.0)
    """
    if kind == "gaussian":
        return torch.randn(shape, generator=generator) * math.sqrt(variance)
    if kind == "laplace":
        # inverse CDF of Laplace(0, b) on u ~ U(-1/2, 1/2), kept away from |u| = 1/2
        u = torch.rand(shape, generator=generator).clamp(1e-7, 1 - 1e-7) - 0.5
        b = math.sqrt(variance / 2)
        return -b * u.sign() * torch.log1p(-2 * u.abs())
    raise PrivflError(f"unknown noise {kind!r}; expected gaussian or laplace")


def record_images(record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """The originals, reconstructions and per-image PSNRs that a record of a run with
    ``[attack.inversion] images = true`` holds (from ``RunResult.attacks`` or attacks.json).

    Returns:
        ``(original, reconstruction, psnr)``: two float32 tensors ``(D, *input_shape)`` in
        ``[0, 1]``, row ``i`` of one matched to row ``i`` of the other, and ``D`` PSNRs (dB).

    Raises:
        PrivflError: the record holds no images (the run did not set ``images = true``, or
            the record is one of "no plaintext available").
    """
    images = record.get("images")
    if not images:
        raise PrivflError(
            "this record holds no images: run with [attack.inversion] images = true "
            "(--set attack.inversion.images=true)"
        )
    return (
        torch.tensor(images["original"], dtype=torch.float32),
        torch.tensor(images["reconstruction"], dtype=torch.float32),
        [float(p) for p in images["psnr"]],
    )


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: unchanged), then restore.

    An attack's graphs are small (thousands of parameters, a handful of images): extra
    threads only synchronize, and on a loaded machine two threads made each evaluation
    10-15x slower than one (measured on this project's 2-core machine).
    """
    if n == 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = [
    "ATTACKS",
    "BATCHED_ATTACKS",
    "AttackSettings",
    "InversionObserver",
    "NOISE_KINDS",
    "Status",
    "TargetKind",
    "gradient_noise",
    "record_images",
]
