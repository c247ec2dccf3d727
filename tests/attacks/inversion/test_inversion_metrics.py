"""PSNR and SSIM agree with scikit-image (the peer library); matching and label accuracy on
hand-checked cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from privfl.attacks.inversion.metrics import label_accuracy, match, mse, psnr, score, ssim
from privfl.errors import PrivflError


def _pair(shape, seed, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    b = (a + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize(
    "shape", [(4, 1, 8, 8), (3, 3, 32, 32), (2, 1, 7, 11), (2, 3, 9, 7)], ids=str
)
@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_psnr_ssim_mse_match_scikit_image(shape, noise):
    a, b = _pair(shape, seed=sum(shape), noise=noise)
    want_ssim = [
        structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, channel_axis=0)
        for i in range(len(a))
    ]
    want_psnr = [
        peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=1.0) for i in range(len(a))
    ]
    want_mse = [mean_squared_error(a[i].numpy(), b[i].numpy()) for i in range(len(a))]
    np.testing.assert_allclose(ssim(a, b).numpy(), want_ssim, atol=1e-4, rtol=0)
    np.testing.assert_allclose(psnr(a, b).numpy(), want_psnr, atol=1e-4, rtol=0)
    np.testing.assert_allclose(mse(a, b).numpy(), want_mse, atol=1e-7, rtol=1e-5)


def test_psnr_of_identical_images_is_infinite_and_ssim_one():
    a, _ = _pair((2, 1, 8, 8), seed=1)
    assert torch.isinf(psnr(a, a)).all()
    np.testing.assert_allclose(ssim(a, a).numpy(), 1.0)


def test_ssim_refuses_images_smaller_than_its_window():
    a, b = _pair((1, 1, 6, 8), seed=2)
    with pytest.raises(PrivflError, match="at least 7x7"):
        ssim(a, b)


def test_match_is_the_least_total_mse_assignment():
    # Brute force over every injective assignment of 3 reconstructions to 5 originals.
    g = torch.Generator().manual_seed(3)
    orig = torch.rand(5, 1, 4, 4, generator=g)
    rec = orig[torch.tensor([4, 0, 2])] + 0.3 * torch.randn(3, 1, 4, 4, generator=g)
    cost = ((rec[:, None] - orig[None]) ** 2).flatten(2).mean(2)
    best = min(
        itertools.permutations(range(5), 3),
        key=lambda p: sum(float(cost[i, j]) for i, j in enumerate(p)),
    )
    assert match(rec, orig).tolist() == list(best)


def test_match_refuses_more_reconstructions_than_originals():
    with pytest.raises(PrivflError, match="only 2 originals"):
        match(torch.zeros(3, 1, 2, 2), torch.zeros(2, 1, 2, 2))


@pytest.mark.parametrize(
    ("recovered", "true", "want"),
    [
        ([3], [3], 1.0),
        ([3], [4], 0.0),
        ([1, 1, 2, 5], [1, 2, 2, 5], 0.75),  # one 1 too many, one 2 missing
        ([0, 0], [0, 0, 0, 1, 1], 1.0),  # a subset of a larger client's data
        ([7, 8, 9], [0, 1, 2], 0.0),
    ],
)
def test_label_accuracy_scores_the_label_multiset(recovered, true, want):
    got = label_accuracy(torch.tensor(recovered), torch.tensor(true), num_classes=10)
    assert got == pytest.approx(want)


def test_score_clips_to_the_input_range_and_scores_each_pair_against_its_match():
    g = torch.Generator().manual_seed(4)
    orig = torch.rand(3, 1, 8, 8, generator=g)
    rec = torch.stack([orig[2] + 0.05, orig[0] * 3.0])  # out of range: clipped to [0, 1]
    s = score(rec, torch.tensor([1, 0]), orig, torch.tensor([0, 5, 1]), num_classes=6)
    assert s.matched.tolist() == [2, 0]
    clipped = rec.clamp(0, 1)
    want = [
        peak_signal_noise_ratio(orig[j].numpy(), clipped[i].numpy(), data_range=1.0)
        for i, j in enumerate([2, 0])
    ]
    np.testing.assert_allclose(s.psnr_each, want, atol=1e-4)
    assert s.psnr == pytest.approx(float(np.mean(want)), abs=1e-4)
    assert s.label_accuracy == 1.0 and s.ssim is not None and not math.isnan(s.ssim)
