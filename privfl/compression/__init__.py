"""Client-side compression of updates: top-k, random-k, QSGD, scaled sign with majority
vote, and error feedback; each client's payload is serialized and its bytes counted."""

from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.error_feedback import ErrorFeedback
from privfl.compression.majority_vote import MajorityVote, majority_vote
from privfl.compression.qsgd import QSGDPayload, decode_qsgd, qsgd
from privfl.compression.sign import SignPayload, decode_sign, scaled_sign
from privfl.compression.sparse import (
    IndexMode,
    SparsePayload,
    decode_sparse,
    keep_count,
    random_k,
    top_k,
)
from privfl.compression.transform import CompressUpdates, compression_stages

__all__ = [
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
