"""Engines: how the sampled clients of a round are trained.

``ENGINES`` maps the ``[federation] engine`` name to its class.
"""

from privfl.engine.base import Engine
from privfl.engine.sequential import SequentialEngine
from privfl.engine.vectorized import VectorizedEngine

ENGINES: dict[str, type[Engine]] = {
    "sequential": SequentialEngine,
    "vectorized": VectorizedEngine,
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)

__all__ = ["ENGINES", "ENGINE_NAMES", "Engine", "SequentialEngine", "VectorizedEngine"]
