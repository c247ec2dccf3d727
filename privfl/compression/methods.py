"""The compressors by ``compression.method`` name (one :class:`Compressor` subclass each).

>>> from privfl.compression import COMPRESSORS, CompressionConfig, create_compressor
>>> [str(m) for m in COMPRESSORS]
['topk', 'randk', 'qsgd', 'sign']
>>> c = create_compressor(CompressionConfig(method="topk", ratio=0.01), 1000)
>>> type(c).__name__, c.k
('TopK', 10)
"""

from __future__ import annotations

from privfl.compression.compressor import Compressor
from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.qsgd import QSGD
from privfl.compression.sign import SignSGD
from privfl.compression.sparse import RandK, TopK
from privfl.registry import Registry

#: Every ``compression.method``; the key is each class's ``method`` attribute.
COMPRESSORS: Registry[CompressionMethod, type[Compressor]] = Registry.by_attribute(
    "compression.method", "method", (TopK, RandK, QSGD, SignSGD)
)


def create_compressor(config: CompressionConfig, dim: int) -> Compressor:
    """The compressor of ``[compression]`` for updates of length ``dim``."""
    return COMPRESSORS[CompressionMethod(config.method)](config, dim)


__all__ = ["COMPRESSORS", "create_compressor"]
