"""How far a secure channel's encoding can move one client's contribution: the slack that
central DP's clipping leaves so that what the aggregate sums stays within the clip norm S.

DP-FedAvg's noise is calibrated to one user changing the *decoded* sum by at most S (L2).
The plain channel sums the clipped updates as they are. Secure channels do not:

- secure aggregation and BFV encode ``rho * x`` (``rho = w / max_weight``, ``w = 1`` under
  central DP) as fixed-point integers (:class:`~privfl.defenses.quantize.FixedPointCodec`),
  so every coordinate of a contribution, decoded and scaled back, moves by up to
  ``e = codec.error_bound(1) * max_weight``: half a step ``c / (2 M)`` with nearest rounding,
  a whole step with stochastic rounding, times ``max_weight``;
- CKKS adds fresh encryption noise to every slot, at most ``CKKSParams.noise_bound`` per
  coordinate of a weight-1 contribution (a generous bound), and the key holder rounds the
  decrypted *sum* to a power-of-two grid ``g`` (:meth:`CKKSScheme.grid`, so that no noise bit
  leaves it). With and without one user the two rounded sums differ by the user's
  contribution plus two rounding errors of at most ``g / 2`` each, so ``e = noise_bound + g``,
  with ``g`` taken at the largest value a valid sum may reach (``CKKSScheme.bound``), which
  covers the double-precision decoding error too.

A contribution ``x`` with ``||x|| <= S - sqrt(d) e`` therefore moves the decoded sum by at most
``||x|| + sqrt(d) e <= S`` whatever the input, which is the sensitivity the ledger assumes
(rounding whose error is data-dependent cannot be treated as post-processing: the noise is
added after decoding). Without the slack a crafted update whose coordinates sit just above
half a step decodes to nearly twice its norm.
"""

from __future__ import annotations

import math

from privfl.stages import Channel


def per_value_error(channel: Channel, summands: int) -> float:
    """The largest absolute change the channel's encoding (and, for CKKS, the rounding of the
    decrypted sum) makes to one coordinate of one weight-1 contribution when ``summands``
    clients take part (0 for a channel that sums float updates as they are)."""
    # Deferred: the channels' modules import the config, which imports this package.
    from privfl.defenses.he import BFVScheme, CKKSScheme, HEChannel
    from privfl.defenses.secagg.channel import SecAggChannel

    n = max(summands, 1)
    if isinstance(channel, SecAggChannel):
        values, _ = channel.codecs(n)
        return values.error_bound(1) * channel.max_weight
    if isinstance(channel, HEChannel):
        scheme = channel.scheme
        if isinstance(scheme, BFVScheme):
            values, _ = scheme.codecs(n)
            return values.error_bound(1) * scheme.max_weight
        if isinstance(scheme, CKKSScheme):
            return scheme.params.noise_bound + scheme.grid(n, scheme.bound)
    return 0.0


def encoding_slack(channel: Channel, summands: int, dim: int, scale: float = 1.0) -> float:
    """``sqrt(dim) * scale * e``: the most the channel's encoding can add to the L2 norm of one
    weight-1 contribution of ``dim`` encoded values among ``summands`` (see the module
    docstring), when the server multiplies the decoded values by ``scale`` (shared-seed
    random-k sends its ``k`` coordinates unscaled and the server scales them by ``d / k``).
    Increasing in ``summands`` (a larger cohort leaves fewer levels per client)."""
    return math.sqrt(dim) * scale * per_value_error(channel, summands)


__all__ = ["encoding_slack", "per_value_error"]
