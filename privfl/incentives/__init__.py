"""Participation incentives: each client's contribution, measured from the updates the server
already has (leave-one-out, GTG-Shapley, multi-round reconstruction)."""
