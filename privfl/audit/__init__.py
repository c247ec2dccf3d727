"""Empirical privacy audit with canary clients (Andrew et al. 2023)."""

from privfl.audit.config import AuditConfig

__all__ = ["AuditConfig"]
