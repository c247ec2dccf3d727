"""D-PSGD over a peer-to-peer graph: the round loop of ``[federation] topology != "star"``.

Every node holds its own model, a row of one float32 ``(n, dim)`` tensor ``X``. A round
(Lian et al., "Can Decentralized Algorithms Outperform Centralized Algorithms? A Case Study
for Decentralized Parallel Stochastic Gradient Descent", NeurIPS 2017, Algorithm 1, with the
local steps of Koloskova et al. 2020's unified analysis) is

1. every active node trains locally from its own row with the run's trainer (plain SGD,
   DP-SGD, a malicious node's), giving ``Delta_i``; the run's client transforms act on the
   updates as on a star run (local DP's clipping and noise, a poisoner's update);
2. each node sends ``x_i + Delta_i`` to its neighbours, ``gossip_steps`` times, and keeps the
   mix: ``X <- W^g (X + Delta)``, one matrix product (``W``: the doubly stochastic mixing
   matrix of :mod:`privfl.decentralized.topology`).

This is the adapt-then-combine form (train, then average); on the complete graph with
uniform weights (``W = 11^T / n``) every node ends each round with FedAvg's model at equal
client weights. No server holds a model: ``params`` is the average of the nodes' models, which
the metrics evaluate (``test_accuracy``, ``test_loss``; on text ``test_perplexity`` too, as a
star run) beside each node's own (mean and worst 10%), the consensus distance
``(1/n) sum_i ||x_i - xbar||^2`` and the bytes each node sends.

:class:`DecentralizedRun` is a :class:`~privfl.federation.Federation` (same data, model,
stages, ledger, budget stop, run folder, checkpoints and resume) whose round is the above.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfl.config import Config, load_config
from privfl.data.federated import FederatedData
from privfl.data.text import Vocabulary
from privfl.decentralized.config import DecentralizedConfig
from privfl.decentralized.topology import Gossip, build_gossip
from privfl.errors import RunFolderError
from privfl.evaluation import evaluate_test, federated_evaluate
from privfl.federation import Federation, _drop_nonfinite, _weighted
from privfl.runfolder import RunFile, RunFolder
from privfl.sampling import UniformSampler
from privfl.stages import RoundContext
from privfl.update import ServerView, UpdateBatch

#: ``ServerView.channel`` of the view a curious node has of one neighbour.
GOSSIP_CHANNEL = "gossip"


def consensus_distance(nodes: torch.Tensor) -> float:
    """``(1/n) sum_i ||x_i - xbar||^2`` over the rows of ``nodes`` (float32 ``(n, dim)``),
    computed in float64: Koloskova et al. 2020's consensus distance (0 at consensus)."""
    x = nodes.double()
    return float(((x - x.mean(dim=0)) ** 2).sum(dim=1).mean())


class DecentralizedRun(Federation):
    """One D-PSGD run over the graph of ``config.federation.topology`` (module docstring).

    Attributes:
        gossip: the graph and its mixing matrix.
        nodes: float32 ``(n, dim)``, every node's model (row ``i``: node ``i``).
        params: the average of ``nodes`` (what the metrics and ``RunResult.params`` report).
    """

    def __init__(
        self, config: Config, *, folder: RunFolder | None = None, data: FederatedData | None = None
    ) -> None:
        super().__init__(config, folder=folder, data=data)
        f = config.federation
        self.settings = f.decentralized or DecentralizedConfig.model_validate({})
        n = self.data.num_clients
        s = self.settings
        self.gossip: Gossip = build_gossip(f.topology, n, config.seed, mixing=s.mixing, p=s.p)
        steps = torch.from_numpy(np.linalg.matrix_power(self.gossip.mixing, s.gossip_steps))
        self._mix = steps.to(torch.float32)
        if s.participation == "all":  # D-PSGD: every node, every round
            self.sampler = UniformSampler(n, n, config.seed)
        self.nodes = self.params.unsqueeze(0).repeat(n, 1)  # every node starts from the init
        neighbours = self.gossip.in_neighbours(s.observer)
        #: the neighbour whose messages the curious node ``settings.observer`` hands to the
        #: attacks (its lowest-numbered in-neighbour); None on a one-node graph.
        self.watched: int | None = int(neighbours[0]) if len(neighbours) else None

    def _spawn(self, config: Config, data: FederatedData | None = None) -> Federation:
        """A twin or shadow run, decentralized like this one when its config is."""
        cls = DecentralizedRun if config.federation.topology != "star" else Federation
        return cls(config, data=self.data if data is None else data)

    # ------------------------------------------------------------------ one round

    def run_round(self) -> dict[str, Any]:
        """Local training of the round's active nodes, their client transforms, gossip;
        returns the round's metrics record."""
        r, t0, plan = self._begin_round()
        active = plan.cohort
        ctx = RoundContext(
            r, self.config.seed, self.params, self.spec, self.data.num_clients, active, self.ledger
        )
        rows = torch.from_numpy(active)
        starts = self.nodes[rows]
        updates = self.engine.train(self.params, active.tolist(), r, starts=starts)
        batch = UpdateBatch.stack(updates, self.spec.dim)
        trained = {"train_loss": _weighted(batch, "loss"), "examples": int(batch.weights.sum())}
        t_train = time.perf_counter()
        for transform in self.stages.client_transforms:
            batch = transform.apply(batch, ctx)
        batch, nonfinite = _drop_nonfinite(batch, r)  # a node ignores a non-finite message
        sent = self.nodes.clone()
        sent[torch.from_numpy(batch.client_ids)] += batch.deltas
        before = self.nodes
        self.nodes = self._mix @ sent  # gossip_steps mixing steps: one matrix product
        self.params = self.nodes.mean(dim=0)
        self._observe(r, before, batch)
        t_agg = time.perf_counter()
        info: dict[str, Any] = {**batch.info, **self._budget_figures(plan)}
        last = self._is_last(r)
        record = self._node_record(ctx, batch, nonfinite, trained, info, last=last)
        return self._close_round(record, (t0, t_train, t_agg), last=last)

    def _observe(self, r: int, before: torch.Tensor, batch: UpdateBatch) -> None:
        """Hand the attacks what the curious node ``settings.observer`` learns of its watched
        neighbour ``j`` this round: ``j``'s message ``x_j + Delta_j`` and, as an upper bound
        of its knowledge, ``j``'s start model ``x_j`` (exact in round 1, when every node
        starts from the common initial model; later the curious node knows ``x_j`` only in
        part, since ``j`` mixed in messages of nodes it does not hear)."""
        j = self.watched
        if not self.stages.observers or j is None:
            return
        mine = batch.client_ids == j
        view = ServerView(
            round=r,
            global_params=before[j].clone(),
            client_ids=np.array([j], dtype=np.int64),
            updates=batch.select(mine) if mine.any() else None,
            channel=GOSSIP_CHANNEL,
        )
        octx = replace(self._observer_ctx, progress=self.progress)
        for observer in self.stages.observers:
            self.attacks.extend(observer.observe(view, octx))

    def _node_record(
        self,
        ctx: RoundContext,
        batch: UpdateBatch,
        nonfinite: np.ndarray,
        trained: dict[str, Any],
        info: dict[str, Any],
        *,
        last: bool,
    ) -> dict[str, Any]:
        r, n, dim = ctx.round, self.gossip.num_nodes, self.spec.dim
        sent = self.settings.gossip_steps * self.gossip.messages_per_step * dim * 4
        record: dict[str, Any] = {
            "round": r,
            "test_accuracy": None,
            "test_loss": None,
            "train_loss": trained["train_loss"],
            "clients": ctx.sampled.tolist(),
            "dropped": sorted(set(nonfinite.tolist()) | set(batch.dropped.tolist())),
            "nonfinite": int(len(nonfinite)),
            "bytes_up": int(sent),
            "bytes_down": int(sent),
            "bytes_per_node": sent / n,
            "examples": trained["examples"],
            "topology": self.gossip.topology,
            "consensus_distance": consensus_distance(self.nodes),
        }
        ev = self.config.evaluation
        if last or r % ev.every == 0:
            test = self.data.bundle.test
            self.spec.load_into(self.model, self.params)
            model = self._model_on_device()  # self.model on the CPU, else its device copy
            vocab = self.data.bundle.vocab  # text: perplexity; word accuracy without pad/oov/...
            record.update(evaluate_test(model, test.x, test.y, vocab, ev.batch_size))
            if ev.federated_every and (last or r % ev.federated_every == 0):
                train, idx = self.data.bundle.train, self.data.partition.test_indices
                record.update(federated_evaluate(model, train.x, train.y, idx, ev.batch_size))
            for evaluator in self.stages.evaluators:
                record.update(evaluator.evaluate(model, ctx))
            record.update(self._node_accuracy(model, test.x, test.y, vocab, ev.batch_size))
            self.spec.load_into(self.model, self.params)
        record.update(info)
        for scorer in self.stages.scorers:
            record.update(scorer.score(record, ctx))
        return record

    def _node_accuracy(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        vocab: Vocabulary | None,
        batch_size: int,
    ) -> dict[str, Any]:
        """Each node's own model on the test set, loaded into ``model`` (on the run's device)
        in turn: the mean, and the mean of the worst ``ceil(10%)`` (the fairness figure of Li
        et al., ICLR 2020) of their accuracies (on words, the accuracy ``test_accuracy``
        reports: without pad, oov, bos and eos)."""
        acc = np.empty(self.gossip.num_nodes)
        for i, row in enumerate(self.nodes):  # one test pass per node, vectorized inside
            self.spec.load_into(model, row)
            acc[i] = evaluate_test(model, x, y, vocab, batch_size)["test_accuracy"]
        worst = np.sort(acc)[: max(1, math.ceil(0.1 * len(acc)))]
        return {
            "node_accuracy_mean": float(acc.mean()),
            "node_accuracy_worst10": float(worst.mean()),
        }

    # ------------------------------------------------------------ persistence

    def state_dict(self, *, metrics: bool = True) -> dict[str, Any]:
        """The star run's state (the average model as ``params``) and every node's model."""
        return {**super().state_dict(metrics=metrics), "nodes": self.nodes.clone()}

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        nodes = state["nodes"]
        if not isinstance(nodes, torch.Tensor) or nodes.shape != self.nodes.shape:
            raise RunFolderError("checkpoint's node models do not match config.toml's graph")
        super()._load_state_dict(state)
        self.nodes = nodes.clone()
        self.params = self.nodes.mean(dim=0)


def runner_class(config: Config) -> type[Federation]:
    """The round loop of ``config``: :class:`Federation` for the star (a server), or
    :class:`DecentralizedRun` for a peer-to-peer topology."""
    return Federation if config.federation.topology == "star" else DecentralizedRun


def resume_run(run_dir: str | Path) -> Federation:
    """Reopen ``run_dir`` at its last checkpoint with the round loop its config.toml names
    (:meth:`Federation.resume`, which also says why a folder is not a run folder)."""
    config = RunFolder(run_dir).file(RunFile.CONFIG)
    cls = runner_class(load_config(config)) if config.is_file() else Federation
    return cls.resume(run_dir)


__all__ = [
    "GOSSIP_CHANNEL",
    "DecentralizedRun",
    "consensus_distance",
    "resume_run",
    "runner_class",
]
