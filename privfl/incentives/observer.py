"""Contribution measurement as an observer of the round: it values the clients of each
measured round from the updates in the server's view and adds the values up per client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.errors import PrivflError
from privfl.incentives.config import IncentivesConfig
from privfl.incentives.utility import ReconstructionUtility
from privfl.incentives.values import CachedUtility, exact_shapley, gtg_shapley, leave_one_out
from privfl.runfolder import RunFile
from privfl.seeding import numpy_rng
from privfl.stages import Observer, ObserverContext
from privfl.update import ServerView

if TYPE_CHECKING:
    from torch import nn

    from privfl.pipeline import RunEnd
    from privfl.update import ParamSpec

#: What a subset of a round's clients is worth (written into contributions.json).
UTILITY = {
    "share": "validation accuracy of the global model plus the subset's part of the round's "
    "FedAvg step (sum over the subset of p_i Delta_i / sum over the round of p_i)",
    "subset_mean": "validation accuracy of the global model plus the FedAvg mean of the "
    "subset's updates alone",
}


class ContributionObserver(Observer):
    """Values each measured round's clients (:mod:`privfl.incentives.values`) and sums a
    client's values over the rounds it took part in.

    Args:
        cfg: the ``[incentives]`` section.
        validation: the server's validation examples ``(x, y)``.
        make_model, spec: the run's architecture and flat layout.
        num_clients: registered clients (one record each; the canary clients of an
            ``[audit]`` join from id ``num_clients`` on, valued like any client and marked).
        malicious: the clients a poisoning attack controls (ground truth, for scoring only;
            the measurement never reads it).
        seed: root of GTG-Shapley's permutations, stream ``(seed, "incentives", round)``.
    """

    def __init__(
        self,
        cfg: IncentivesConfig,
        *,
        validation: tuple[torch.Tensor, torch.Tensor],
        make_model: Callable[[], nn.Module],
        spec: ParamSpec,
        num_clients: int,
        malicious: frozenset[int],
        seed: int,
    ) -> None:
        self.cfg, self.validation = cfg, validation
        self.make_model, self.spec = make_model, spec
        self.malicious, self.seed = malicious, seed
        self.rounds = None if cfg.rounds is None else frozenset(cfg.rounds)
        self.registered = num_clients
        self.scores = np.zeros(num_clients)
        self.taken_part = np.zeros(num_clients, dtype=np.int64)
        self.by_round: list[dict[str, Any]] = []
        self._model: nn.Module | None = None

    def observe(self, view: ServerView, ctx: ObserverContext) -> list[dict[str, Any]]:
        """Values this round's clients (nothing for ``attacks.json``)."""
        if self.rounds is not None and view.round not in self.rounds:
            return []
        batch = view.updates
        if batch is None:  # privfl.combinations refuses secure channels; a guard
            raise PrivflError(
                f"[incentives] needs each client's update; the {view.channel!r} "
                "channel shows only their sum"
            )
        if len(batch) == 0:
            return []
        start = time.perf_counter()
        if self._model is None:
            self._model = self.make_model()
        x, y = self.validation
        utility = CachedUtility(
            ReconstructionUtility(
                self._model,
                self.spec,
                view.global_params,
                batch.deltas,
                batch.weights,
                x,
                y,
                reconstruction=self.cfg.reconstruction,
            ),
            len(batch),
        )
        values, note = self._values(utility, len(batch), view.round)
        ids = batch.client_ids
        self._grow(int(ids.max()) + 1)  # an audit's canary clients have ids past N
        np.add.at(self.scores, ids, values)
        np.add.at(self.taken_part, ids, 1)
        self.by_round.append(
            {
                "round": view.round,
                "clients": ids.tolist(),
                "values": values.round(6).tolist(),
                "evaluations": utility.evaluations,
                "seconds": round(time.perf_counter() - start, 4),
                **({"note": note} if note else {}),
            }
        )
        return []

    def _values(self, utility: CachedUtility, n: int, round_: int) -> tuple[np.ndarray, str]:
        cfg = self.cfg
        if cfg.method == "loo":
            return leave_one_out(utility, n), ""
        full, empty = utility(np.array([[True] * n, [False] * n]))
        if abs(full - empty) <= cfg.round_threshold:
            return np.zeros(n), (
                f"the cohort moved the utility by {full - empty:+.4f}, within round_threshold "
                f"{cfg.round_threshold}: every client scores 0 (between-round truncation)"
            )
        if cfg.method == "mr":
            if n > cfg.max_exact_clients:
                raise PrivflError(
                    f"incentives.method = 'mr' values {n} clients exactly (2^{n} subsets), "
                    f"more than max_exact_clients = {cfg.max_exact_clients}: use gtg_shapley "
                    "or raise max_exact_clients"
                )
            return exact_shapley(utility, n), ""
        result = gtg_shapley(
            utility,
            n,
            numpy_rng(self.seed, "incentives", round_),
            eps=cfg.eps,
            min_permutations=cfg.min_permutations,
            max_permutations=cfg.max_permutations,
            tolerance=cfg.tolerance,
        )
        return result.values, f"{result.permutations} permutations"

    def _grow(self, size: int) -> None:
        if size > len(self.scores):
            extra = size - len(self.scores)
            self.scores = np.concatenate([self.scores, np.zeros(extra)])
            self.taken_part = np.concatenate([self.taken_part, np.zeros(extra, dtype=np.int64)])

    # ------------------------------------------------------------------ output

    def records(self) -> list[dict[str, Any]]:
        """One record per registered client: ``client``, ``score`` (the sum of its per-round
        values), ``rounds`` (how many measured rounds it took part in), ``malicious``; then
        one per audit canary client that took part, with ``audit_canary = true``."""
        out = []
        for c in range(len(self.scores)):
            record = {
                "client": c,
                "score": float(self.scores[c]),
                "rounds": int(self.taken_part[c]),
                "malicious": c in self.malicious,
            }
            if c >= self.registered:
                record["audit_canary"] = True
            out.append(record)
        return out

    def finish(self, end: RunEnd) -> None:
        """Write ``contributions.json`` and ``plots/contributions.png``."""
        if end.folder is None:
            return
        records = self.records()
        end.folder.write_json(
            RunFile.CONTRIBUTIONS,
            {
                "method": self.cfg.method,
                "utility": UTILITY[self.cfg.reconstruction],
                "reconstruction": self.cfg.reconstruction,
                "validation_size": int(len(self.validation[1])),
                "malicious_note": "ground truth of the poisoning attack, for scoring only",
                "seconds": round(sum(r["seconds"] for r in self.by_round), 3),
                "records": records,
                "by_round": self.by_round,
            },
        )
        from privfl.incentives.plot import plot_contributions

        plot_contributions(records, end.folder.plot_path("contributions"), self.cfg.method)

    def state_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores.tolist(),
            "taken_part": self.taken_part.tolist(),
            "by_round": list(self.by_round),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scores = np.asarray(state["scores"], dtype=np.float64)
        if scores.ndim != 1 or scores.size < self.registered:
            raise ValueError(
                f"contribution state for {scores.size} clients, fewer than the {self.registered} "
                "registered"
            )
        self.scores = scores
        self.taken_part = np.asarray(state["taken_part"], dtype=np.int64)
        self.by_round = list(state["by_round"])


__all__ = ["UTILITY", "ContributionObserver"]
