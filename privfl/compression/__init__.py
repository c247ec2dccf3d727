"""Client-side compression of updates: top-k, random-k, QSGD, scaled sign with majority
vote, and error feedback; each client's payload is serialized and its bytes counted.

One :class:`Compressor` subclass per method (:class:`TopK`, :class:`RandK`, :class:`QSGD`,
:class:`SignSGD`), registered by name in :data:`COMPRESSORS`."""

from privfl.compression.compressor import Compressor
from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.error_feedback import ErrorFeedback
from privfl.compression.majority_vote import MajorityVote, majority_vote
from privfl.compression.methods import COMPRESSORS, create_compressor
from privfl.compression.qsgd import QSGD, QSGDPayload, decode_qsgd, qsgd
from privfl.compression.sign import SignPayload, SignSGD, decode_sign, scaled_sign
from privfl.compression.sparse import (
    IndexMode,
    RandK,
    SparsePayload,
    TopK,
    decode_sparse,
    keep_count,
    random_k,
    top_k,
)
from privfl.compression.transform import CompressUpdates, compression_stages

__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Compressor",
    "RandK",
    "SignSGD",
    "TopK",
    "create_compressor",
    "CompressUpdates",
    "CompressionConfig",
    "CompressionMethod",
    "ErrorFeedback",
    "IndexMode",
    "MajorityVote",
    "QSGDPayload",
    "SignPayload",
    "SparsePayload",
    "compression_stages",
    "decode_qsgd",
    "decode_sign",
    "decode_sparse",
    "keep_count",
    "majority_vote",
    "qsgd",
    "random_k",
    "scaled_sign",
    "top_k",
]
