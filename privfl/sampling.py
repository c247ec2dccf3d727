"""Client sampling: who takes part in a round."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from privfl.seeding import numpy_rng, secure_uniform


class ClientSampler(ABC):
    """Chooses a round's cohort. Draws come from the stream ``(seed, "sample", round)``, so a
    round's cohort does not depend on earlier rounds (resume needs no sampler state)."""

    def __init__(self, num_clients: int, seed: int) -> None:
        self.num_clients, self.seed = num_clients, seed

    @abstractmethod
    def sample(self, round: int) -> np.ndarray:
        """Sorted int64 client ids of ``round``'s cohort."""


class UniformSampler(ClientSampler):
    """Exactly ``per_round`` clients, uniformly without replacement (McMahan et al. 2017)."""

    def __init__(self, num_clients: int, per_round: int, seed: int) -> None:
        super().__init__(num_clients, seed)
        if not 1 <= per_round <= num_clients:
            raise ValueError(f"per_round must be in [1, {num_clients}], got {per_round}")
        self.per_round = per_round

    def sample(self, round: int) -> np.ndarray:
        rng = numpy_rng(self.seed, "sample", round)
        return np.sort(rng.choice(self.num_clients, size=self.per_round, replace=False)).astype(
            np.int64
        )


class PoissonSampler(ClientSampler):
    """Each client joins independently with probability ``q`` (the cohort size varies and may
    be 0). The sampling the privacy amplification of DP-FedAvg assumes (McMahan et al. 2018).

    With ``secure = True`` the draws come from the OS's secure generator
    (:func:`~privfl.seeding.secure_uniform`) instead of the seeded stream: the amplification
    assumes that an observer cannot know who was sampled, which the seed would tell anyone
    holding the config. The cohorts then differ on every call and in every run.
    """

    def __init__(self, num_clients: int, rate: float, seed: int, *, secure: bool = False) -> None:
        super().__init__(num_clients, seed)
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
        self.rate, self.secure = rate, secure

    def sample(self, round: int) -> np.ndarray:
        if self.secure:
            draws = secure_uniform(self.num_clients)
        else:
            draws = numpy_rng(self.seed, "sample", round).random(self.num_clients)
        return np.flatnonzero(draws < self.rate).astype(np.int64)


__all__ = ["ClientSampler", "PoissonSampler", "UniformSampler"]
