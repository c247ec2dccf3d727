"""Shared set-up of the inversion tests: DLG's LeNet, digits and patches, and updates made by
privfl's own client (``SGDTrainer``), independent of the attack's replay of it.

A helper module, not a ``conftest.py``: the foundation's tests import ``small_config`` with
``from conftest import ...``, which a second (package-less) conftest module would shadow. Test
files import the fixtures they use (with their dependencies) from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from privfl.attacks.inversion import InversionTarget, InversionThreat
from privfl.client import LocalTraining, SGDTrainer
from privfl.data.bundled import load_digits
from privfl.data.patches import load_patches
from privfl.models import DLG_LENET, MLPConfig, create_model
from privfl.seeding import numpy_rng
from privfl.update import ParamSpec

LENET = DLG_LENET

#: A small sigmoid MLP in the same init: much cheaper to invert, for the plumbing tests.
MLP = MLPConfig(hidden=[32], activation="sigmoid", init="uniform")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The attacks' graphs are tiny: one intra-op thread is much faster on a loaded machine
    (the observer does the same during a run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Case:
    """A model at its initial weights and a data set: what a round starts from."""

    model: torch.nn.Module
    spec: ParamSpec
    w0: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def target(
        self, idx: torch.Tensor, training: LocalTraining, noise: float = 0.0, seed: int = 0
    ) -> InversionTarget:
        """The update privfl's client sends after training on examples ``idx``; ``noise`` is
        the std of Gaussian noise added to its gradient equivalent ``-delta / lr``."""
        x, y = self.x[idx], self.y[idx]
        delta, _ = SGDTrainer(training).train(
            self.model,
            self.spec,
            self.w0,
            x,
            y,
            torch.Generator().manual_seed(seed),
            client_id=0,
            round=1,
        )
        self.spec.load_into(self.model, self.w0)  # the client trained the module in place
        if noise:
            g = torch.Generator().manual_seed(10_000 + seed)
            delta = delta + training.lr * noise * torch.randn(delta.shape, generator=g)
        threat = InversionThreat(training, tuple(self.x.shape[1:]), self.num_classes)
        return InversionTarget.from_delta(self.model, self.spec, self.w0, delta, len(y), threat)


def _case(bundle, config=LENET, seed: int = 0) -> Case:
    model = create_model(config, bundle.input_shape, bundle.num_classes, seed)
    spec = ParamSpec.of(model)
    return Case(
        model, spec, spec.flatten(model), bundle.train.x, bundle.train.y, bundle.num_classes
    )


@pytest.fixture(scope="session")
def digits_bundle():
    return load_digits(test_fraction=0.2, rng=numpy_rng(0, "data"))


@pytest.fixture(scope="session")
def patches_bundle():
    return load_patches(test_fraction=0.2, rng=numpy_rng(0, "data"))


@pytest.fixture
def digits(digits_bundle) -> Case:
    """DLG's LeNet on the 8x8 digits."""
    return _case(digits_bundle)


@pytest.fixture
def digits_mlp(digits_bundle) -> Case:
    """A sigmoid MLP on the 8x8 digits."""
    return _case(digits_bundle, MLP)


@pytest.fixture
def patches(patches_bundle) -> Case:
    """DLG's LeNet on the 32x32 sample-photograph patches."""
    return _case(patches_bundle)


@pytest.fixture
def make_case() -> Callable[..., Case]:
    return _case


__all__ = [
    "LENET",
    "MLP",
    "Case",
    "digits",
    "digits_bundle",
    "digits_mlp",
    "make_case",
    "one_torch_thread",
    "patches",
    "patches_bundle",
]
