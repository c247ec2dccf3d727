"""Decentralized (peer-to-peer) learning: D-PSGD over a graph (``[federation] topology``).

:mod:`~privfl.decentralized.topology` builds the graph and its doubly stochastic mixing
matrix; :mod:`~privfl.decentralized.runner` is the round loop the driver chooses when the
topology is not ``"star"``. Only the config is imported here (the config imports this
package); import the runner from its module. See docs/decentralized.md.
"""

from privfl.decentralized.config import TOPOLOGY_NAMES, DecentralizedConfig

__all__ = ["TOPOLOGY_NAMES", "DecentralizedConfig"]
