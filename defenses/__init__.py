"""Defenses: differential privacy, secure aggregation, homomorphic encryption and robust
aggregation."""
