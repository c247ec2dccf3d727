"""How close a reconstruction is to the data it came from: MSE, PSNR, SSIM, label accuracy, and
the best one-to-one match between a batch of reconstructions and the originals.

Images are float tensors ``(n, C, H, W)`` with pixel values in ``[0, 1]`` (``data_range = 1``).
PSNR and SSIM follow scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity``
with their defaults (a test checks agreement to 1e-4); they are written here in torch so that
scikit-image stays a test-only dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from privfl.errors import PrivflError

#: scikit-image's SSIM defaults (Wang et al. 2004, IEEE TIP 13(4), eq. 13 and §III-C).
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image.

    Args:
        a, b: shape ``(n, *image_shape)``.

    Returns:
        float64 ``(n,)``.
    """
    _same_shape(a, b)
    return (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)`` in dB.

    Identical images give ``inf`` (as scikit-image's ``peak_signal_noise_ratio``).

    Returns:
        float64 ``(n,)``.
    """
    return 10.0 * torch.log10(data_range**2 / mse(a, b))


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004), scikit-image's variant.

    As ``skimage.metrics.structural_similarity(x, y, data_range=data_range, channel_axis=0)``
    with its defaults: a 7x7 uniform window, ``K1 = 0.01, K2 = 0.03``, sample covariances
    (``N / (N - 1)``), the mean over the pixels whose window lies inside the image, and for
    several channels the mean over channels.

    Args:
        a, b: shape ``(n, C, H, W)`` with ``H, W >= 7``.

    Returns:
        float64 ``(n,)``.
    """
    _same_shape(a, b)
    if a.ndim != 4:
        raise PrivflError(f"ssim needs images (n, C, H, W), got shape {tuple(a.shape)}")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise PrivflError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
            f"got {tuple(a.shape[-2:])}"
        )
    n, c = a.shape[:2]
    x = a.double().reshape(n * c, 1, *a.shape[-2:])
    y = b.double().reshape(n * c, 1, *b.shape[-2:])
    # A "valid" average pool computes exactly the window means scikit-image keeps after
    # cropping (win_size - 1) // 2 pixels from each border.
    w = SSIM_WINDOW
    cov_norm = w * w / (w * w - 1.0)
    ux, uy = F.avg_pool2d(x, w, stride=1), F.avg_pool2d(y, w, stride=1)
    uxx, uyy = F.avg_pool2d(x * x, w, stride=1), F.avg_pool2d(y * y, w, stride=1)
    uxy = F.avg_pool2d(x * y, w, stride=1)
    vx, vy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).reshape(n, c).mean(dim=1)


def label_accuracy(recovered: torch.Tensor, true: torch.Tensor, num_classes: int) -> float:
    """Share of the recovered labels that are right, order-free: ``sum_c min(r_c, t_c) / n``
    with ``r_c``, ``t_c`` the counts of class ``c`` among the ``n`` recovered labels and the
    true ones. For one example it is 1 when the label is right, else 0; for a batch it
    scores the recovered label multiset, as label-count recovery returns no order.

    Args:
        recovered: int64 ``(n,)``.
        true: int64 ``(m,)``, ``m >= n`` (the examples the reconstructions are matched to).
    """
    if len(recovered) == 0:
        raise PrivflError("label_accuracy of an empty reconstruction")
    r = torch.bincount(recovered, minlength=num_classes)
    t = torch.bincount(true, minlength=num_classes)
    return float(torch.minimum(r, t).sum()) / len(recovered)


def match(reconstructions: torch.Tensor, originals: torch.Tensor) -> np.ndarray:
    """The one-to-one assignment of reconstructions to originals of least total MSE
    (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``). A batch attack returns
    its images in no particular order, so each is scored against the original it matches.

    Args:
        reconstructions: ``(n, *shape)``; originals: ``(m, *shape)`` with ``m >= n``.

    Returns:
        int64 ``(n,)``: for reconstruction ``i`` the index of its original.
    """
    n, m = len(reconstructions), len(originals)
    if n > m:
        raise PrivflError(f"{n} reconstructions but only {m} originals to match them to")
    if reconstructions.shape[1:] != originals.shape[1:]:
        raise PrivflError(
            f"reconstruction shape {tuple(reconstructions.shape[1:])} != "
            f"original shape {tuple(originals.shape[1:])}"
        )
    a = reconstructions.double().flatten(1)
    b = originals.double().flatten(1)
    cost = torch.cdist(a, b).pow(2) / a.shape[1]  # (n, m) MSE
    rows, cols = linear_sum_assignment(cost.numpy())
    out = np.empty(n, dtype=np.int64)
    out[rows] = cols
    return out


@dataclass(frozen=True)
class Score:
    """A reconstruction's quality against the ground truth.

    Attributes:
        mse, psnr, ssim: means over the matched pairs (PSNR in dB; SSIM None for images
            under 7x7 pixels, where it is undefined).
        label_accuracy: see :func:`label_accuracy`.
        psnr_each: float64 ``(n,)``, PSNR of each reconstruction.
        matched: int64 ``(n,)``, the original each reconstruction was matched to.
    """

    mse: float
    psnr: float
    ssim: float | None
    label_accuracy: float
    psnr_each: np.ndarray
    matched: np.ndarray


def score(
    x: torch.Tensor,
    labels: torch.Tensor,
    true_x: torch.Tensor,
    true_y: torch.Tensor,
    num_classes: int,
) -> Score:
    """Score a batch of reconstructions ``(x, labels)`` against the true data.

    Each reconstruction is matched to one original (:func:`match`), pixel values are clipped
    to ``[0, 1]`` (the attacker knows the input range), and MSE, PSNR and SSIM are averaged
    over the pairs. Labels are scored order-free (:func:`label_accuracy`).
    """
    x = x.detach().clamp(0.0, 1.0)
    idx = match(x, true_x)
    orig = true_x[torch.from_numpy(idx)]
    p = psnr(x, orig)
    s = None
    if x.ndim == 4 and min(x.shape[-2:]) >= SSIM_WINDOW:
        s = float(ssim(x, orig).mean())
    return Score(
        mse=float(mse(x, orig).mean()),
        psnr=float(p.mean()) if torch.isfinite(p).all() else math.inf,
        ssim=s,
        label_accuracy=label_accuracy(labels, true_y, num_classes),
        psnr_each=p.numpy(),
        matched=idx,
    )


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise PrivflError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_WINDOW",
    "Score",
    "label_accuracy",
    "match",
    "mse",
    "psnr",
    "score",
    "ssim",
]
