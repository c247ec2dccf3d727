"""Secure aggregation with pairwise masks (Bonawitz et al., CCS 2017) and SecAgg+ graphs
(Bell et al., CCS 2020).

Modules: ``constants`` (stages, sizes), ``config`` (``[defense.secagg]``), ``shamir`` (secret
sharing over GF(2^31 - 1)), ``keys`` (X25519, HKDF-SHA256, AES-GCM), ``masking`` (AES-CTR
mask generator), ``graph`` (complete and Harary graphs, SecAgg+ parameters), ``messages``
(wire formats), ``state`` (round parameters and party state), ``client``, ``server``,
``protocol`` (one simulated round), ``channel`` (the round loop's stage), ``threat``.
"""

from privfl.defenses.secagg.channel import (
    SecAggChannel,
    create_secagg_channel,
    mean_error_bound,
)
from privfl.defenses.secagg.client import SecAggClient
from privfl.defenses.secagg.config import (
    SecAggConfig,
    check_secagg_degree,
    secagg_degree_problem,
)
from privfl.defenses.secagg.constants import Neighbours, ShareKind, Stage
from privfl.defenses.secagg.errors import ProtocolError, SecAggAbort, ShareIntegrityError
from privfl.defenses.secagg.graph import NeighbourGraph, SecAggPlusParameters, secaggplus_parameters
from privfl.defenses.secagg.masking import MaskExpander, prg
from privfl.defenses.secagg.protocol import (
    MaskedVectors,
    ProtocolResult,
    draw_dropouts,
    run_protocol,
)
from privfl.defenses.secagg.server import SecAggServer
from privfl.defenses.secagg.state import ClientState, RoundParams, ServerState
from privfl.defenses.secagg.threat import SECAGG_THREAT_MODEL

__all__ = [
    "SECAGG_THREAT_MODEL",
    "ClientState",
    "MaskExpander",
    "MaskedVectors",
    "NeighbourGraph",
    "Neighbours",
    "ProtocolError",
    "ProtocolResult",
    "RoundParams",
    "SecAggAbort",
    "SecAggChannel",
    "SecAggClient",
    "SecAggConfig",
    "SecAggPlusParameters",
    "SecAggServer",
    "ServerState",
    "ShareIntegrityError",
    "ShareKind",
    "Stage",
    "check_secagg_degree",
    "create_secagg_channel",
    "draw_dropouts",
    "mean_error_bound",
    "prg",
    "run_protocol",
    "secagg_degree_problem",
    "secaggplus_parameters",
]
