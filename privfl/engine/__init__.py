"""Engines: how the sampled clients of a round are trained.

``auto`` (the default) is the vectorized engine where it applies, the sequential one otherwise.

``ENGINES`` maps the ``[federation] engine`` name to its class.
"""

from privfl.engine.base import Engine
from privfl.engine.ray import RayEngine
from privfl.engine.ray_config import RayConfig
from privfl.engine.sequential import SequentialEngine
from privfl.engine.vectorized import AutoEngine, VectorizedEngine
from privfl.registry import Registry

# Ray is imported only when the "ray" engine is built (optional extra privfl[ray]).
ENGINES: Registry[str, type[Engine]] = Registry.of(
    "federation.engine",
    (
        ("auto", AutoEngine),
        ("sequential", SequentialEngine),
        ("vectorized", VectorizedEngine),
        ("ray", RayEngine),
    ),
)
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)

__all__ = [
    "AutoEngine",
    "ENGINES",
    "ENGINE_NAMES",
    "Engine",
    "RayConfig",
    "RayEngine",
    "SequentialEngine",
    "VectorizedEngine",
]
