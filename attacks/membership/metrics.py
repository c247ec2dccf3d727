"""How well a membership score separates members from non-members: the ROC curve, its AUC and
the TPR at a fixed low FPR, the headline of Carlini et al. 2022 ("Membership Inference Attacks
From First Principles", S&P 2022, Section III: an attack must be measured at low false-positive
rates, not by accuracy or AUC alone)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import roc_curve

#: The false-positive rates whose TPR every membership record carries.
REPORTED_FPRS: tuple[float, ...] = (0.001, 0.01)


@dataclass(frozen=True)
class Roc:
    """An ROC curve: ``fpr`` and ``tpr`` (increasing), from scores where larger means member."""

    fpr: np.ndarray
    tpr: np.ndarray
    members: int
    non_members: int

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoidal), 0.5 for a score independent of membership."""
        return float(_trapezoid_auc(self.fpr, self.tpr))

    def tpr_at_fpr(self, fpr: float) -> float:
        """The largest TPR at a threshold whose FPR is strictly below ``fpr``.

        The convention of the LiRA reference code (tensorflow/privacy,
        research/mi_lira_2021/plot.py). With ``non_members`` candidates the smallest non-zero FPR
        is ``1 / non_members``: below that, this is the TPR at FPR 0.

        >>> roc = roc_of([0.9, 0.8, 0.3, 0.2], [True, False, True, False])
        >>> roc.tpr_at_fpr(0.01), roc.tpr_at_fpr(0.6)
        (0.5, 1.0)
        """
        if not 0.0 < fpr <= 1.0:
            raise ValueError(f"fpr must lie in (0, 1], got {fpr}")
        below = np.flatnonzero(self.fpr < fpr)
        return float(self.tpr[below[-1]]) if below.size else 0.0

    @classmethod
    def from_record(cls, record: dict) -> Roc:
        """The curve an ``attacks.json`` membership record carries (``roc``, ``members``,
        ``non_members``), e.g. to plot several runs' curves together."""
        try:
            fpr, tpr = record["roc"]["fpr"], record["roc"]["tpr"]
            return cls(np.asarray(fpr), np.asarray(tpr), record["members"], record["non_members"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a membership record with its ROC: missing {e}") from None

    def metrics(self) -> dict[str, float | int]:
        """``auc``, ``tpr_at_fpr_0.001``, ``tpr_at_fpr_0.01``, ``members`` and
        ``non_members``: the numbers an ``attacks.json`` membership record carries."""
        out: dict[str, float | int] = {"auc": self.auc}
        for fpr in REPORTED_FPRS:
            out[f"tpr_at_fpr_{fpr:g}"] = self.tpr_at_fpr(fpr)
        out["members"] = self.members
        out["non_members"] = self.non_members
        return out


def roc_of(scores, is_member) -> Roc:
    """The ROC of ``scores`` (larger = member) against the truth ``is_member``.

    Raises:
        ValueError: scores that are not finite, lengths that differ, or a candidate set
            without both members and non-members.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(is_member, dtype=bool).ravel()
    if s.shape != m.shape:
        raise ValueError(f"{s.size} scores for {m.size} membership labels")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} membership scores are not finite")
    members = int(m.sum())
    if members == 0 or members == m.size:
        raise ValueError("the candidates need both members and non-members")
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    return Roc(fpr, tpr, members, int(m.size - members))


def membership_metrics(scores, is_member) -> dict[str, float | int]:
    """:meth:`Roc.metrics` of :func:`roc_of` ``(scores, is_member)``."""
    return roc_of(scores, is_member).metrics()
