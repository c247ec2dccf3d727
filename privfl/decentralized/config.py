"""``[federation.decentralized]``: the graph and the gossip of a decentralized topology.

Kept free of privfl imports beyond :mod:`privfl.config_rules` so that :mod:`privfl.config`
imports it without a cycle.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field, PositiveInt

from privfl.config_rules import SECTION_CONFIG

#: ``[federation] topology``: ``star`` is the server of every other part of privfl; the others
#: are peer-to-peer graphs trained with D-PSGD (:mod:`privfl.decentralized`).
Topology = Literal["star", "ring", "torus", "erdos_renyi", "complete", "exponential"]
TOPOLOGY_NAMES: tuple[str, ...] = get_args(Topology)


class DecentralizedConfig(BaseModel):
    """``[federation.decentralized]``: how the nodes of a peer-to-peer topology mix.

    ``mixing = "metropolis"``: Metropolis-Hastings weights ``W_ij = 1 / (1 + max(d_i, d_j))``
    on the undirected graph (Xiao and Boyd 2004); ``"uniform"``: every neighbour and the node
    itself weigh ``1 / (d_max + 1)`` (the rest of the row on the node itself), which on a
    regular graph is ``1 / (d + 1)`` and on ``complete`` the plain average; for
    ``exponential``, ``"uniform"`` is Ying et al. 2021's static exponential graph (directed,
    ``1 / (tau + 1)`` on the node and each ``i + 2^k``). ``participation = "all"``: every node
    trains every round (D-PSGD, Lian et al. 2017; ``federation.clients_per_round`` must be
    left at its default or equal ``data.clients``); ``"sampled"``: ``clients_per_round`` nodes
    drawn by ``federation.sampling`` train, and every node still gossips.
    """

    model_config = SECTION_CONFIG

    mixing: Literal["metropolis", "uniform"] = Field(
        "metropolis", description="mixing weights: Metropolis-Hastings or uniform (max-degree)"
    )
    gossip_steps: PositiveInt = Field(1, description="gossip (mixing) steps after local training")
    p: float | None = Field(
        None, gt=0, le=1, description="edge probability (topology = 'erdos_renyi'; required)"
    )
    participation: Literal["all", "sampled"] = Field(
        "all", description="every node trains each round, or clients_per_round sampled nodes"
    )
    observer: int = Field(
        0, ge=0, description="the curious node whose view of a neighbour the attacks get"
    )


__all__ = ["TOPOLOGY_NAMES", "DecentralizedConfig", "Topology"]
