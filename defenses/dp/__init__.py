"""Differential privacy: sample-level DP-SGD (Opacus), user-level DP-FedAvg with fixed or
adaptive clipping, and local DP. Privacy spending goes to the run's ledger."""

from privfl.defenses.dp.config import DPConfig, DPMode

__all__ = ["DPConfig", "DPMode"]
