"""Homomorphic-encrypted aggregation with TenSEAL: clients encrypt their updates, the server
adds ciphertexts with a public context, a separate key holder decrypts only the sum.

Modules: :mod:`~.params` (parameters, presets, security level), :mod:`~.config`
(``[defense.he]``), :mod:`~.packing`, :mod:`~.envelope` (wire format), :mod:`~.ckks` and
:mod:`~.bfv` (the schemes), :mod:`~.quantize` (BFV's fixed-point codec), :mod:`~.check`
(vouchers and the sum check), :mod:`~.keys` (the key holder), :mod:`~.parties` (clients and
server), :mod:`~.channel` (the round).
"""

from privfl.defenses.he.bfv import BFVScheme, mean_error_bound
from privfl.defenses.he.channel import (
    EncryptedRound,
    HEChannel,
    HEMetric,
    create_he_channel,
    create_he_scheme,
)
from privfl.defenses.he.check import ClientKeys, RoundCheck
from privfl.defenses.he.ckks import CKKSScheme
from privfl.defenses.he.config import HEConfig, Scheme
from privfl.defenses.he.errors import (
    CiphertextError,
    HeadroomError,
    TooFewClientsError,
    VoucherError,
)
from privfl.defenses.he.keys import KeyHolder, load_public_context
from privfl.defenses.he.params import (
    BFV_DEFAULT,
    CKKS_PRESETS,
    BFVParams,
    CKKSParams,
    Preset,
    SecurityLevel,
)
from privfl.defenses.he.parties import ClientEncryptor, HEServer
from privfl.defenses.he.scheme import Decoded, Encoding, HEScheme
from privfl.defenses.he.threat import HE_THREAT_MODEL
from privfl.defenses.quantize import FixedPointCodec, Rounding

__all__ = [
    "BFVParams",
    "BFVScheme",
    "BFV_DEFAULT",
    "Encoding",
    "FixedPointCodec",
    "Rounding",
    "create_he_scheme",
    "mean_error_bound",
    "CKKSParams",
    "CKKSScheme",
    "CKKS_PRESETS",
    "CiphertextError",
    "ClientEncryptor",
    "ClientKeys",
    "Decoded",
    "EncryptedRound",
    "HEChannel",
    "HE_THREAT_MODEL",
    "HEConfig",
    "HEMetric",
    "HEScheme",
    "HEServer",
    "HeadroomError",
    "KeyHolder",
    "Preset",
    "RoundCheck",
    "Scheme",
    "SecurityLevel",
    "TooFewClientsError",
    "VoucherError",
    "create_he_channel",
    "load_public_context",
]
