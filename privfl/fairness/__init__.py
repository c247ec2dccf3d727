"""Fairness across clients: how evenly the global model serves them (:mod:`.metrics`), and
q-FFL, the training objective that makes it more even (:mod:`.qffl`; Li, Sanjabi, Beirami and
Smith, "Fair Resource Allocation in Federated Learning", ICLR 2020). See docs/fairness.md."""

from privfl.fairness.metrics import fairness_figures, jain_index, worst_fraction_mean

__all__ = ["fairness_figures", "jain_index", "worst_fraction_mean"]
