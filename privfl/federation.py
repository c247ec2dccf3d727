"""The round loop (docs/design.md, "The round"), checkpoints and resume.

:class:`Federation` is a template: :meth:`Federation.run_round` drives the stages in order,
and what each stage does is chosen by the config (see :mod:`privfl.plan`). A run is a pure
function of its config and seed: every random stream is derived from ``(seed, name, round,
...)``, so a run resumed from a checkpoint ends with exactly the numbers of an uninterrupted
one.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from privfl.config import Config, load_config
from privfl.data.federated import FederatedData, build_federated_data
from privfl.device import resolve_device
from privfl.engine import ENGINES
from privfl.errors import ConfigError, PrivflError, RunFolderError
from privfl.evaluation import evaluate_test, federated_evaluate
from privfl.ledger import Ledger, PrivacyEvent, client_party
from privfl.models import create_model
from privfl.pipeline import RunEnd, RunSetup
from privfl.plan import Stages, build_stages, prepare_data
from privfl.runfolder import RunFile, RunFolder, to_jsonable
from privfl.seeding import derive_seed
from privfl.server_optim import create_server_optimizer
from privfl.stages import AggregationResult, ChannelResult, ObserverContext, RoundContext
from privfl.threat import threat_record
from privfl.update import GroundTruth, ParamSpec, UpdateBatch

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger(__name__)

#: 2: the run folder's checkpoint leaves the metrics out (they are metrics.jsonl's records,
#: read back on resume); 1 (still read) held them too, which made every checkpoint's cost grow
#: with the rounds run.
CHECKPOINT_FORMAT = 2
_READABLE_FORMATS = (1, 2)


@dataclass
class RunResult:
    """What a finished run returns.

    Attributes:
        config: the resolved config.
        metrics: one dict per round (the lines of ``metrics.jsonl``).
        params: float32 ``(dim,)``, the final global model as a flat vector.
        model: a module holding the final global model.
        attacks: the records of ``attacks.json``.
        ledger: the privacy ledger.
        run_dir: the run folder, or None for a run without one.
        timings: wall-clock seconds of each round run by this process (the lines of
            ``timings.jsonl``; kept apart from the deterministic metrics).
        budget_stop: why the run ended before its configured rounds (``defense.dp.
            max_epsilon``), or None when it ran them all.
    """

    config: Config
    metrics: list[dict[str, Any]]
    params: torch.Tensor
    model: nn.Module
    attacks: list[dict[str, Any]] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    run_dir: Path | None = None
    timings: list[dict[str, Any]] = field(default_factory=list)
    budget_stop: BudgetStop | None = None

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round run.

        Raises:
            PrivflError: no round ran (a budget stopped the run before its first round).
        """
        if not self.metrics:
            why = "" if self.budget_stop is None else f": {self.budget_stop.sentence()}"
            raise PrivflError(f"no round ran, so there is no final accuracy{why}")
        return float(self.metrics[-1]["test_accuracy"])


@dataclass(frozen=True)
class BudgetStop:
    """Why a run ended before its configured rounds: round ``round`` (the first not run)
    would have taken a party past ``defense.dp.max_epsilon``, or no client had budget left."""

    round: int
    reason: str

    def sentence(self) -> str:
        """The sentence the console and the privacy report show."""
        return f"The run stopped before round {self.round}: {self.reason}."


@dataclass(frozen=True)
class RoundPlan:
    """Who takes part in round ``round``, decided before it trains.

    Attributes:
        cohort: sorted int64 ids of the clients that train.
        retired: sampled clients left out because the round would take their own budget past
            ``max_epsilon`` (sample-level and local DP). The round's metrics list them as
            ``budget_excluded``, and those left out for the first time as ``budget_retired``
            (a client's budget only grows, so a client left out once is left out for good).
        stop: set when the round must not run at all.
    """

    round: int
    cohort: np.ndarray
    retired: np.ndarray
    stop: BudgetStop | None = None


class Federation:
    """One federated training run: data, model, stages and the state that evolves per round."""

    def __init__(
        self, config: Config, *, folder: RunFolder | None = None, data: FederatedData | None = None
    ) -> None:
        self.config, self.folder = config, folder
        #: Where clients train and the global model is tested (updates stay CPU vectors).
        self.device = resolve_device(config.federation.device)
        self._device_model: nn.Module | None = None
        canaries = None
        if data is None:  # a spawned run shares its parent's data, canaries included
            data, canaries = prepare_data(config, build_federated_data(config.data, config.seed))
        self.data = data
        bundle = self.data.bundle
        self._model_seed = derive_seed(config.seed, "model")
        self.model = self.make_model()
        self.spec = ParamSpec.of(self.model)
        self.params = self.spec.flatten(self.model)
        self.ledger = Ledger()
        self.stages: Stages = build_stages(
            config,
            RunSetup(
                config,
                self.data,
                self.spec,
                self.make_model,
                self.ledger,
                spawn=self._spawn,
                canaries=canaries,
            ),
        )
        self.sampler = self.stages.sampler
        dp = config.defense.dp
        self.max_epsilon: float | None = None if dp is None else dp.max_epsilon
        if self.max_epsilon is not None and self.stages.budget is None:
            raise ConfigError(
                f"defense.dp.max_epsilon: mode {dp.mode!r} does not plan its spending before a "  # type: ignore[union-attr]
                "round yet, so the budget cannot be enforced; remove max_epsilon"
            )
        self.ledger.max_epsilon = self.max_epsilon
        self._plan: RoundPlan | None = None
        self.engine = ENGINES[config.federation.engine](
            self.make_model,
            self.spec,
            self.data,
            self.stages.trainer,
            config.seed,
            federation=config.federation,
        )
        self.server_optimizer = create_server_optimizer(config.federation)
        self.round = 0
        self.metrics: list[dict[str, Any]] = []
        self.attacks: list[dict[str, Any]] = []
        #: How many attack records attacks.json holds (None: unknown, write it at the next
        #: checkpoint); a checkpoint rewrites the file only when records were added.
        self._attacks_saved: int | None = None
        self.timings: list[dict[str, Any]] = []
        #: a rich Progress the driver shows; observers may add tasks to it (None: no display).
        self.progress: Progress | None = None
        self._observer_ctx = ObserverContext(
            make_model=self.make_model,
            spec=self.spec,
            input_shape=bundle.input_shape,
            num_classes=bundle.num_classes,
            ground_truth=self._ground_truth,
            device=self.device,
        )

    def make_model(self) -> nn.Module:
        """A fresh module of the run's architecture with the run's initial weights."""
        b = self.data.bundle
        dp = self.config.defense.dp
        return create_model(
            self.config.model,
            b.input_shape,
            b.num_classes,
            self._model_seed,
            dp_layers=dp is not None and dp.mode == "sample",  # Opacus' DPLSTM for DP-SGD
        )

    def _model_on_device(self) -> nn.Module:
        """The global model (``self.params``) on the run's device, for testing it there:
        ``self.model`` itself on the CPU, else a device copy kept between rounds."""
        if self.device.type == "cpu":
            return self.model
        if self._device_model is None:
            self._device_model = copy.deepcopy(self.model).to(self.device)
        self.spec.load_into(self._device_model, self.params)
        return self._device_model

    def _spawn(self, config: Config, data: FederatedData | None = None) -> Federation:
        """Another run of ``config`` without a folder, on this run's data (a clean twin) or on
        ``data`` (a shadow run)."""
        return Federation(config, data=self.data if data is None else data)

    def _ground_truth(self, client: int) -> GroundTruth:
        x, y = self.data.client_train(client)
        return GroundTruth(client, x, y)

    # ------------------------------------------------------------------ one round

    def run_round(self) -> dict[str, Any]:
        """Run the next round through every stage; returns its metrics record."""
        r, t0, plan = self._begin_round()
        sampled = plan.cohort
        ctx = RoundContext(
            r, self.config.seed, self.params, self.spec, self.data.num_clients, sampled, self.ledger
        )
        batch = self.engine.train_batch(self.params, sampled.tolist(), r)
        if getattr(self.stages.aggregator, "needs_start_loss", False):
            batch = self._with_start_loss(batch)
        # What the clients trained on, before transforms may reweight (DP) or add rows (canaries).
        trained = {"train_loss": _weighted(batch, "loss"), "examples": int(batch.weights.sum())}
        t_train = time.perf_counter()
        for transform in self.stages.client_transforms:
            batch = transform.apply(batch, ctx)
        batch, nonfinite = _drop_nonfinite(batch, r)
        result = self.stages.channel.transmit(batch, self.stages.aggregator, ctx)
        aggregation = result.aggregation
        info: dict[str, Any] = {**batch.info, **result.info}
        if aggregation is None and any(
            t.releases_without_updates for t in self.stages.server_transforms
        ):
            aggregation = AggregationResult(torch.zeros(self.spec.dim), weight_sum=0.0)
        if aggregation is not None:
            for transform in self.stages.server_transforms:
                aggregation = transform.apply(aggregation, ctx)
            self.params = self.server_optimizer.step(self.params, aggregation.delta)
            info.update(aggregation.info)
        else:
            reasons = [f"{k}: {v}" for k, v in info.items() if k.endswith("_abort") and v]
            why = "; ".join(reasons) or "no surviving updates"
            log.warning("round %d: no aggregate (%s); the model is unchanged", r, why)
        octx = replace(self._observer_ctx, progress=self.progress)
        for observer in self.stages.observers:
            self.attacks.extend(observer.observe(result.view, octx))
        t_agg = time.perf_counter()
        info.update(self._budget_figures(plan))
        last = self._is_last(r)
        record = self._metrics_record(
            ctx, batch, nonfinite, result, aggregation, trained, info, last=last
        )
        return self._close_round(record, (t0, t_train, t_agg), last=last)

    # ------------------------------------------------- the round's bookkeeping
    # (shared with the decentralized runner, privfl.decentralized.runner)

    def _begin_round(self) -> tuple[int, float, RoundPlan]:
        """The next round's number, start time and plan; a round past the configured last or
        a budget stop is an error."""
        r = self.round + 1
        last = self.config.federation.rounds
        if r > last:
            raise PrivflError(
                f"run_round called past the run's last round (federation.rounds = {last}): "
                "its plan (attack rounds, DP calibration, the final evaluation) ends there; "
                "raise federation.rounds to train longer"
            )
        t0 = time.perf_counter()
        plan = self.plan_round(r)
        if plan.stop is not None:
            raise PrivflError(f"{plan.stop.sentence()} (run_round called past the stop)")
        self._plan = None
        return r, t0, plan

    def _budget_figures(self, plan: RoundPlan) -> dict[str, Any]:
        """The round's budget figures for its metrics (none without ``max_epsilon``)."""
        if self.max_epsilon is None:
            return {}
        out: dict[str, Any] = {}
        if len(plan.retired) and not len(plan.cohort):
            out["budget_abort"] = "every sampled client's budget is spent"
        before = {c for m in self.metrics for c in m.get("budget_retired", ())}
        out["budget_excluded"] = plan.retired.tolist()
        out["budget_retired"] = [c for c in plan.retired.tolist() if c not in before]
        return out

    def _is_last(self, r: int) -> bool:
        """Whether round ``r`` is the run's last: its configured last, or a budget stop
        before the next."""
        return r == self.config.federation.rounds or self.budget_stop(r + 1) is not None

    def _close_round(
        self, record: dict[str, Any], times: tuple[float, float, float], *, last: bool
    ) -> dict[str, Any]:
        """Append round ``record`` (its timing from ``times`` = start, end of training, end of
        aggregation) and write both to the run folder; returns ``record``."""
        t0, t_train, t_agg = times
        self.round = int(record["round"])
        self.metrics.append(record)
        t_end = time.perf_counter()
        timing = {
            "round": self.round,
            "seconds": t_end - t0,
            "train_seconds": t_train - t0,
            "aggregate_seconds": t_agg - t_train,
            "eval_seconds": t_end - t_agg,
            "engine": self.engine.trains_with,
        }
        self.timings.append(timing)
        self._write_round(record, timing, last=last)
        return record

    def _with_start_loss(self, batch: UpdateBatch) -> UpdateBatch:
        """The batch with each client's loss on its training data at the round's global
        model, ``F_k(w^t)``, as the metric ``start_loss`` (q-FFL; asked only by an aggregator
        with ``needs_start_loss``): what each client computes before training, exactly."""
        from privfl.fairness.qffl import START_LOSS, client_start_losses

        ids = batch.client_ids.tolist()
        bs = self.config.evaluation.batch_size
        # On the run's device, as the clients' training (the CPU run's self.model there).
        model = self._model_on_device()
        f = client_start_losses(model, self.spec, self.params, self.data, ids, bs)
        return replace(batch, metrics={**batch.metrics, START_LOSS: f})

    # ------------------------------------------------------------------ budget

    def plan_round(self, r: int) -> RoundPlan:
        """Round ``r``'s cohort, decided before it trains (cached until the round runs): the
        sampler's draw, less the clients whose own budget the round would take past
        ``defense.dp.max_epsilon``; with ``stop`` set when a party that is not a client (the
        server) would pass it, or when every client's budget is spent. Without a budget,
        the sampler's draw."""
        if self._plan is not None and self._plan.round == r:
            return self._plan
        sampled = self.sampler.sample(r)
        none = np.zeros(0, dtype=np.int64)
        plan = RoundPlan(r, sampled, none)
        budget, cap = self.stages.budget, self.max_epsilon
        if budget is not None and cap is not None:
            eps = self._epsilons_with(budget.planned_events(r, sampled))
            over = {p: e for p, e in eps.items() if e > cap}
            own = {client_party(c): c for c in sampled.tolist()}
            shared = [p for p in over if p not in own]
            if shared:
                p = max(shared, key=lambda q: over[q])
                plan = replace(plan, cohort=none, stop=BudgetStop(r, self._over(p, over[p])))
            else:
                retired = np.array(sorted(own[p] for p in over), dtype=np.int64)
                cohort = np.setdiff1d(sampled, retired)
                plan = RoundPlan(r, cohort, retired)
                if len(cohort) == 0 and self._clients_exhausted(r):
                    reason = (
                        f"no client can take part any more: every client's next round would "
                        f"take its epsilon past max_epsilon = {cap:g}"
                    )
                    plan = replace(plan, stop=BudgetStop(r, reason))
        self._plan = plan
        return plan

    def _over(self, party: str, eps: float) -> str:
        why = " (noise_multiplier 0: no guarantee at all)" if np.isinf(eps) else ""
        return (
            f"it would take {party}'s epsilon to {eps:.4g} > max_epsilon = {self.max_epsilon:g}"
            f" ({self.ledger.accountant.value.upper()} at delta = {self.ledger.delta:g}){why}"
        )

    def _clients_exhausted(self, r: int) -> bool:
        """Whether every client's own budget is spent: round ``r`` would take each client
        with a budget of its own past max_epsilon (False when the mode keeps no per-client
        budget)."""
        assert self.stages.budget is not None and self.max_epsilon is not None
        everyone = np.arange(self.data.num_clients, dtype=np.int64)
        events = self.stages.budget.planned_events(r, everyone)
        own = {client_party(c) for c in everyone.tolist()}
        eps = self._epsilons_with([e for e in events if e.party in own])
        return bool(eps) and all(e > self.max_epsilon for e in eps.values())

    def _epsilons_with(self, events: list[PrivacyEvent]) -> dict[str, float]:
        """:meth:`Ledger.epsilons_with` under the headline accountant; where it fails
        (Opacus' GDP at extreme settings), under RDP, an upper bound, saying so: a budget
        check never crashes a run."""
        try:
            return self.ledger.epsilons_with(events)
        except PrivflError as e:
            log.warning(
                "max_epsilon: the %s accountant failed (%s); the budget is checked under RDP",
                self.ledger.accountant.value,
                e,
            )
            return self.ledger.epsilons_with(events, accountant="rdp")

    def budget_stop(self, r: int | None = None) -> BudgetStop | None:
        """Why round ``r`` (default: the next) must not run (``defense.dp.max_epsilon``), or
        None. A driver asks before each round; the stop is also noted in the ledger
        (``ledger.json``). Without a budget nothing is planned ahead (the sampler is asked
        in the round, as before)."""
        r = self.round + 1 if r is None else r
        if self.max_epsilon is None or r > self.config.federation.rounds:
            return None
        stop = self.plan_round(r).stop
        if stop is not None:
            self.ledger.stop = {"round": stop.round, "reason": stop.reason}
        return stop

    @property
    def done(self) -> bool:
        """Whether the run has ended: its configured rounds ran, or its budget is spent."""
        return self.round >= self.config.federation.rounds or self.budget_stop() is not None

    def _metrics_record(
        self,
        ctx: RoundContext,
        batch: UpdateBatch,
        nonfinite: np.ndarray,
        result: ChannelResult,
        aggregation: AggregationResult | None,
        trained: dict[str, Any],
        info: dict[str, Any],
        *,
        last: bool,
    ) -> dict[str, Any]:
        r = ctx.round
        dropped = sorted(
            set(nonfinite.tolist()) | set(result.dropped.tolist()) | set(batch.dropped.tolist())
        )
        record: dict[str, Any] = {
            "round": r,
            "test_accuracy": None,
            "test_loss": None,
            "train_loss": trained["train_loss"],
            "clients": ctx.sampled.tolist(),
            "dropped": dropped,
            "nonfinite": int(len(nonfinite)),
            "aggregated": 0 if aggregation is None else int(len(batch) - len(result.dropped)),
            "bytes_up": int(result.bytes_up),
            "bytes_down": int(len(ctx.sampled) * self.spec.dim * 4),
            "examples": trained["examples"],
        }
        if aggregation is not None and len(aggregation.excluded):
            record["excluded"] = aggregation.excluded.tolist()
        ev = self.config.evaluation
        if last or r % ev.every == 0:
            self.spec.load_into(self.model, self.params)
            model = self._model_on_device()
            test = self.data.bundle.test
            # text: perplexity, and word accuracy without pad/oov/bos/eos
            record.update(
                evaluate_test(model, test.x, test.y, self.data.bundle.vocab, ev.batch_size)
            )
            if ev.federated_every and (last or r % ev.federated_every == 0):
                train = self.data.bundle.train
                idx = self.data.partition.test_indices
                record.update(federated_evaluate(model, train.x, train.y, idx, ev.batch_size))
            for evaluator in self.stages.evaluators:
                record.update(evaluator.evaluate(model, ctx))  # on the device, as the test
        record.update(info)
        for scorer in self.stages.scorers:
            record.update(scorer.score(record, ctx))
        return record

    # ------------------------------------------------------------ persistence

    def _write_round(self, record: dict[str, Any], timing: dict[str, Any], *, last: bool) -> None:
        if self.folder is None:
            return
        self.folder.append_jsonl(RunFile.METRICS, record)
        self.folder.append_jsonl(RunFile.TIMINGS, timing)
        if last or self.round % self.config.checkpoint_every == 0:
            if self._attacks_saved != len(self.attacks):  # observers only ever add records
                self.folder.write_json(RunFile.ATTACKS, self.attacks)
                self._attacks_saved = len(self.attacks)
            # Without the metrics: metrics.jsonl holds them (appended above), and a checkpoint
            # that pickled them all cost a time growing with the rounds (W1: 27 ms a round by
            # round 600, more than the round itself).
            self.folder.save_checkpoint(self.state_dict(metrics=False))

    def state_dict(self, *, metrics: bool = True) -> dict[str, Any]:
        """Everything that evolves across rounds (the rest is derived from the config);
        ``metrics=False`` leaves the round records out (the run folder's checkpoint: they are
        its metrics.jsonl, which :meth:`resume` reads back)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "round": self.round,
            "params": self.params.clone(),
            "server_optimizer": self.server_optimizer.state_dict(),
            "stages": {k: s.state_dict() for k, s in self.stages.named().items()},  # type: ignore[attr-defined]
            "ledger": self.ledger.state_dict(),
            # JSON-like values only (enums as strings), so the checkpoint loads with
            # torch.load(weights_only=True): see RunFolder.load_checkpoint.
            "attacks": to_jsonable(list(self.attacks)),
        }
        if metrics:
            state["metrics"] = to_jsonable(list(self.metrics))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of the wrong shape is a
        :class:`RunFolderError` (the run folder may come from anyone), never a crash."""
        try:
            self._load_state_dict(state)
        except RunFolderError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise RunFolderError(
                f"checkpoint refused: its contents do not match this run ({type(e).__name__}: {e})"
            ) from None

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") not in _READABLE_FORMATS:
            raise RunFolderError(
                f"checkpoint format {state.get('format')} is not one of {_READABLE_FORMATS}"
            )
        params = state["params"]
        if not isinstance(params, torch.Tensor) or params.shape != self.params.shape:
            raise RunFolderError("checkpoint does not match the model of config.toml")
        self.round = int(state["round"])
        self.params = state["params"].clone()
        self.server_optimizer.load_state_dict(state["server_optimizer"])
        stages = self.stages.named()
        for k, s in state["stages"].items():
            stages[k].load_state_dict(s)  # type: ignore[attr-defined]
        self.ledger.load_state_dict(state["ledger"])
        if "metrics" in state:  # else the run folder's metrics.jsonl (see resume)
            self.metrics = list(state["metrics"])
        self.attacks = list(state["attacks"])
        self._attacks_saved = None  # the file may hold records past the checkpoint

    def finish(self) -> RunResult:
        """Write the end-of-run files (ledger, partition, plots) and return the result."""
        self.engine.close()  # release workers (Ray actors); in-process engines have none
        stop = self.budget_stop()  # noted in the ledger before ledger.json is written
        self.spec.load_into(self.model, self.params)
        if self.stages.end_attacks:
            end = self._run_end()
            for attack in self.stages.end_attacks:
                self.attacks.extend(attack(end))
        if self.folder is not None:
            from privfl.plots import plot_client_accuracy, plot_partition, plot_training

            counts = self.data.label_counts()
            self.folder.write_json(RunFile.LEDGER, self.ledger.to_json())
            self.folder.write_json(RunFile.PARTITION, self.data.partition_record(counts))
            self.folder.write_json(RunFile.ATTACKS, self.attacks)
            self.folder.write_json(
                RunFile.THREATS, [threat_record(c, t) for c, t in self.stages.threats]
            )
            if self.metrics:  # none when a budget stopped the run before its first round
                plot_training(
                    self.metrics, self.folder.plot_path("training"), title=self.config.name
                )
                plot_client_accuracy(  # with evaluation.federated_every only
                    self.metrics, self.folder.plot_path("client_accuracy"), title=self.config.name
                )
            plot_partition(
                counts,
                self.folder.plot_path("partition"),
                title=f"{self.config.data.name}: {self.config.data.partition} partition",
            )
        end = self._run_end()
        for finisher in self.stages.finishers:
            finisher(end)
        return RunResult(
            config=self.config,
            metrics=list(self.metrics),
            params=self.params.clone(),
            model=self.model,
            attacks=list(self.attacks),
            ledger=self.ledger,
            run_dir=None if self.folder is None else self.folder.path,
            timings=list(self.timings),
            budget_stop=stop,
        )

    def _run_end(self) -> RunEnd:
        return RunEnd(
            config=self.config,
            params=self.params,
            ledger=self.ledger,
            folder=self.folder,
            metrics=list(self.metrics),
            attacks=list(self.attacks),
        )

    @classmethod
    def resume(cls, run_dir: str | Path) -> Federation:
        """Reopen ``run_dir`` at its last checkpoint; later records are discarded."""
        folder = RunFolder(run_dir)
        if not folder.file(RunFile.CONFIG).exists():
            raise RunFolderError(f"{run_dir} is not a run folder (no {RunFile.CONFIG.value})")
        fed = cls(load_config(folder.file(RunFile.CONFIG)), folder=folder)
        state = folder.load_checkpoint()
        if state is not None:
            fed.load_state_dict(state)
        records = folder.truncate_jsonl(RunFile.METRICS, fed.round)
        folder.truncate_jsonl(RunFile.TIMINGS, fed.round)
        if state is not None and "metrics" not in state:
            if [r.get("round") for r in records] != list(range(1, fed.round + 1)):
                raise RunFolderError(
                    f"{folder.file(RunFile.METRICS)}: refused: the checkpoint is at round "
                    f"{fed.round}, but the file does not hold one record for each round "
                    f"1..{fed.round} in order ({len(records)} records)"
                )
            fed.metrics = records
        log.info("resuming %s after round %d", run_dir, fed.round)
        return fed


def _drop_nonfinite(batch: UpdateBatch, r: int) -> tuple[UpdateBatch, np.ndarray]:
    """Remove updates holding NaN or Inf; returns the rest and the dropped client ids."""
    if len(batch) == 0:
        return batch, np.zeros(0, dtype=np.int64)
    finite = batch.finite_rows()
    if finite.all():
        return batch, np.zeros(0, dtype=np.int64)
    bad = batch.client_ids[~finite]
    log.warning(
        "round %d: dropped %d update(s) with NaN/Inf from client(s) %s", r, len(bad), bad.tolist()
    )
    return batch.select(finite), bad


def _weighted(batch: UpdateBatch, key: str) -> float | None:
    if key not in batch.metrics or len(batch) == 0 or batch.weights.sum() == 0:
        return None
    v = batch.metrics[key]
    return float(np.sum(v * batch.weights) / batch.weights.sum())


__all__ = ["Federation", "RunResult"]
