"""The membership attacker's threat model (a :class:`privfl.threat.ThreatModel`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MembershipThreat:
    """An outsider who queries the released model (``target = "global"``), or the
    honest-but-curious server that queries one client's trained model (``"client"``), and
    knows how the federation trains.

    Attributes:
        method: ``loss``, ``lira`` or ``rmia``.
        shadow_models: shadow federations the attacker trains (0 for ``loss``).
        knows_recipe: the attacker trains its shadows with the run's own recipe (model,
            federation, local training, DP), the paper's assumption (Carlini et al. 2022,
            Section IV).
        population: where the attacker's data comes from.
        target: ``global`` or ``client``.
    """

    method: str
    shadow_models: int
    knows_recipe: bool = True
    population: str = "the run's training and test splits (the same distribution)"
    target: str = "global"

    @property
    def adversary(self) -> str:
        if self.target == "client":
            return "the honest-but-curious server"
        return "anyone with the released model"

    def summary(self) -> str:
        if self.target == "client":
            return self._client_summary()
        how = (
            "from each candidate's loss under the released model"
            if self.method == "loss"
            else f"by comparing the released model with {self.shadow_models} shadow "
            "federations it trains itself with the run's recipe, half of them on each candidate"
        )
        return (
            "Anyone with the released global model guesses whether a candidate example was in "
            f"some client's training data, {how}. It queries the model's outputs (logits) on "
            f"the candidates and draws its own data from {self.population}. Secure aggregation "
            "and HE do not hide the released model: only DP limits this attack."
        )

    def _client_summary(self) -> str:
        how = (
            "from each candidate's loss under the model the client trained"
            if self.method == "loss"
            else f"by comparing that model with {self.shadow_models} shadow updates it "
            "computes itself, replaying the clients' local training from the same global "
            "model on population sets that hold half of the candidates each"
        )
        return (
            "The honest-but-curious server takes one client's update in each attacked round "
            "and guesses whether a candidate example was in that client's data, "
            f"{how}. It needs the individual update: under secure aggregation or HE the "
            "client target is not observable. Central DP adds its noise after the server "
            "has the update and does not protect it; DP-SGD and local DP do."
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary for ``threats.json``."""
        return {
            "method": self.method,
            "target": self.target,
            "shadow_models": self.shadow_models,
            "knows_recipe": self.knows_recipe,
            "population": self.population,
            "observes": "one client's update each attacked round (global model + update)"
            if self.target == "client"
            else "the released global model's logits",
        }
