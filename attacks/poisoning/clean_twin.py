"""The accuracy drop an attack causes, against the same run without it.

A :class:`CleanTwin` runs, in lockstep with the attacked run, the same config with
``[attack.poisoning]`` removed (same seed, data, cohorts, defense and initial model), one
round per round, in memory. It doubles the cost of a run; ``clean_twin = false`` turns it off.
Its state travels in the attacked run's checkpoints, so ``--resume`` continues both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privfl.stages import RoundContext, Scorer

if TYPE_CHECKING:
    from privfl.pipeline import RoundRunner, RunSetup


class CleanTwin(Scorer):
    """Adds ``clean_test_accuracy`` (the twin's) and ``accuracy_drop`` (twin's minus the
    attacked run's test accuracy) at every evaluation round."""

    def __init__(self, setup: RunSetup) -> None:
        self.setup = setup
        self._twin: RoundRunner | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def twin(self) -> RoundRunner:
        """The clean run, started on first use through ``setup.spawn`` (it shares the
        attacked run's data)."""
        if self._twin is None:
            if self.setup.spawn is None:
                raise RuntimeError("clean_twin needs RunSetup.spawn to start its twin run")
            cfg = self.setup.config
            clean = cfg.model_copy(
                update={
                    "name": f"{cfg.name}-clean",
                    "attack": cfg.attack.model_copy(update={"poisoning": None}),
                    "incentives": None,  # the twin only measures accuracy
                }
            )
            self._twin = self.setup.spawn(clean)
            if self._pending is not None:
                self._twin.load_state_dict(self._pending)
                self._pending = None
        return self._twin

    def score(self, record: dict[str, Any], ctx: RoundContext) -> dict[str, Any]:
        twin = self.twin
        if twin.round != ctx.round - 1:
            raise RuntimeError(f"clean twin is at round {twin.round}, expected {ctx.round - 1}")
        clean = twin.run_round()["test_accuracy"]
        acc = record.get("test_accuracy")
        return {
            "clean_test_accuracy": clean,
            "accuracy_drop": None if clean is None or acc is None else clean - acc,
        }

    def state_dict(self) -> dict[str, Any]:
        if self._twin is None:
            return {} if self._pending is None else dict(self._pending)
        # Without the twin's round records: only each round's test accuracy is read from
        # them, as it is made, and a checkpoint that carried them all would grow by one
        # record a round (as the run's own did until its records moved to metrics.jsonl).
        return self._twin.state_dict(metrics=False)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self._twin is None:
            self._pending = dict(state)
        else:
            self._twin.load_state_dict(state)


__all__ = ["CleanTwin"]
