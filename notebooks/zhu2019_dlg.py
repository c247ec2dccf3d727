# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Zhu, Liu, Han 2019: Deep Leakage from Gradients, and the noisy-gradient defense
#
# *Deep Leakage from Gradients* (NeurIPS 2019, [arXiv 1906.08935](https://arxiv.org/abs/1906.08935);
# code: [mit-han-lab/dlg](https://github.com/mit-han-lab/dlg)).
#
# **The claims.**
#
# 1. Abstract: "the recovery is pixel-wise accurate for images". The image experiments (§4.1,
#    reconstructions in Figure 3): "We experiment our algorithm on modern CNN architectures
#    ResNet-56 [12] and pictures from MNIST [22], CIFAR-100 [21], SVHN [28] and LFW [14]"; the
#    attack draws a dummy image and dummy label and minimizes the squared L2 distance between
#    their gradient and the shared one with L-BFGS. The released code runs a LeNet with sigmoid
#    activations and weights drawn from U(-0.5, 0.5) (`models/vision.py`), L-BFGS with
#    learning rate 1, 300 iterations (`main.py`); we use that LeNet, not the ResNet-56.
# 2. §5.1 "Noisy Gradients": "One straightforward attempt to defense DLG is to add noise on
#    gradients before sharing"; the paper adds Gaussian and Laplacian noise "with variance
#    range from 10^-1 to 10^-4 and central 0" and shows, per variance, the gradient-matching
#    loss and the reconstructions. Its reading, as summarized for this project (we could not
#    reach the paper's full text from this machine to copy the sentences, so check it there):
#    at variance 1e-4 the noise does not prevent the leak, at 1e-3 the leak happens with
#    artifacts, from 1e-2 on DLG fails, and the two noise types behave alike (the magnitude
#    of the variance is what matters).
#
# **Ours.** `examples/inversion.toml`, privfl's federation in DLG's setting: the sigmoid LeNet
# of the authors' code (`privfl.models.DLG_LENET`: 12-channel 5x5 convolutions with strides
# 2, 2, 1, U(-0.5, 0.5) weights), every client holding one image and taking one local SGD step
# on it, so the update the server reads is `-lr x gradient`. The server runs DLG
# (`attack.inversion.method = "dlg"`: soft labels and L-BFGS) on the update of one sampled
# client. The noise defense is `attack.inversion.noise` / `noise_variance`: Gaussian or
# Laplacian noise of the given variance added to each coordinate of the gradient the server
# reads, before the attack, as in §5.1 (no clipping, no privacy accounting: a what-if of the
# paper's experiment; privfl's real defense is `[defense.dp]`). Each seed changes the model's
# initial weights, the attacked client (so the image) and the attack's dummy initialization.
# The records return the reconstructions (`attack.inversion.images = true`,
# `privfl.attacks.inversion.record_images`), which the figures below show beside the
# originals.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import privfl
from privfl.attacks.inversion import record_images
from privfl.reproduce import MeanStd, PaperVsOurs, at_scale, current_scale, mnist_or_digits

START = time.perf_counter()
SCALE = current_scale()
EXAMPLE = Path.cwd().parent / "examples" / "inversion.toml"
data = mnist_or_digits(partition="iid")
print(data.note)
if data.is_mnist:  # one image per client: as many clients as training images
    from privfl.data.mnist import load_mnist

    N_TRAIN = len(load_mnist(data.section["dir"]).train)
else:
    N_TRAIN = 1438  # the digits' training split (80% of 1,797)
print(f"scale {SCALE}: {N_TRAIN} clients, one training image each")

# %% [markdown]
# **Settings per scale.** The paper's grid of variances is 1e-1, 1e-2, 1e-3, 1e-4, for both
# noise types. L-BFGS takes up to 300 steps (the paper's code); a run stops early once a
# step no longer moves the dummies. Under noise the matching loss stalls at the noise's floor
# within a few steps: measured here on MNIST, 30 steps give the same PSNR as 300 (21.5 and
# 12.8 dB at Gaussian variance 1e-4 and 1e-3) at a tenth of the time, so the default scale
# caps noisy runs at 30 steps; the paper scale does not.

# %%
SEEDS = at_scale(small=[0, 1], default=[0, 1, 2], paper=list(range(10)))
VARIANCES = at_scale(small=[1e-2], default=[1e-1, 1e-2, 1e-3, 1e-4], paper=[1e-1, 1e-2, 1e-3, 1e-4])
CLEAN_ITERATIONS = at_scale(small=5, default=300, paper=300)
NOISY_ITERATIONS = at_scale(small=3, default=30, paper=300)
KINDS = ["gaussian", "laplace"]
CONDITIONS = [("none", 0.0)] + [(k, v) for k in KINDS for v in VARIANCES]


def dlg_run(seed, kind, variance):
    """One federation round; the server runs DLG on one client's update; returns its record."""
    sets = [
        f"seed={seed}",
        f"data.clients={N_TRAIN}",
        "federation.clients_per_round=1",
        "attack.inversion.method=dlg",
        "attack.inversion.max_targets=1",
        "attack.inversion.images=true",
        f"attack.inversion.iterations={CLEAN_ITERATIONS if kind == 'none' else NOISY_ITERATIONS}",
    ]
    sets += [f"data.{k}={v}" for k, v in data.section.items()]
    if kind != "none":
        sets += [f"attack.inversion.noise={kind}", f"attack.inversion.noise_variance={variance}"]
    cfg = privfl.load_config(EXAMPLE, sets)
    (record,) = privfl.run(cfg, out=None, progress=False).attacks
    return record


records = {}
for kind, variance in CONDITIONS:
    t0 = time.perf_counter()
    records[kind, variance] = [dlg_run(seed, kind, variance) for seed in SEEDS]
    psnr = [r["psnr"] for r in records[kind, variance]]
    labels = [r["label_accuracy"] for r in records[kind, variance]]
    print(
        f"{kind:8s} variance {variance:7.0e}: PSNR {MeanStd.of(psnr).format('.1f')} dB "
        f"(each {[round(p, 1) for p in psnr]}), label accuracy {labels}, "
        f"{time.perf_counter() - t0:.0f} s"
    )

# %% [markdown]
# **Reconstructions beside their originals** (the paper's Figure 3 plot type): top row the
# client's image, below it what DLG recovered from the gradient alone, one column per seed.

# %%
fig, axes = plt.subplots(2, len(SEEDS), figsize=(1.6 * len(SEEDS), 3.6), squeeze=False)
for j, record in enumerate(records["none", 0.0]):
    original, rec, psnr = record_images(record)
    axes[0][j].imshow(original[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[0][j].set_title(f"seed {SEEDS[j]}, label {record['labels'][0]}", fontsize=7)
    axes[1][j].imshow(rec[0, 0], cmap="gray", vmin=0, vmax=1)
    axes[1][j].set_title(f"{psnr[0]:.1f} dB", fontsize=7)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0][0].set_ylabel("original")
axes[1][0].set_ylabel("DLG")
fig.suptitle("DLG without noise (one local SGD step)", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reconstructions under noise** (the paper's §5.1 figure shows the same grid): the first
# seed's image, reconstructed from its gradient with Gaussian (top row) and Laplacian (bottom
# row) noise of each variance.

# %%
cols = ["original", "no noise", *[f"var {v:.0e}" for v in VARIANCES]]
fig, axes = plt.subplots(len(KINDS), len(cols), figsize=(1.5 * len(cols), 1.8 * len(KINDS)))
axes = np.atleast_2d(axes)
original = record_images(records["none", 0.0][0])[0]
for i, kind in enumerate(KINDS):
    row = [("original", original, None), ("none", *record_images(records["none", 0.0][0])[1:])]
    row += [(v, *record_images(records[kind, v][0])[1:]) for v in VARIANCES]
    for j, (_, img, psnr) in enumerate(row):
        axes[i][j].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
        axes[i][j].set_xticks([])
        axes[i][j].set_yticks([])
        if psnr is not None:
            axes[i][j].set_xlabel(f"{psnr[0]:.1f} dB", fontsize=7)
        if i == 0:
            axes[i][j].set_title(cols[j], fontsize=7)
    axes[i][0].set_ylabel(kind, fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **PSNR against the noise's variance**, mean ± std over the seeds (the dashed line: no noise).

# %%
psnr_of = {c: MeanStd.of([r["psnr"] for r in records[c]]) for c in CONDITIONS}
fig, ax = plt.subplots(figsize=(5, 3.2))
for kind, marker in zip(KINDS, "os", strict=True):
    m = [psnr_of[kind, v] for v in VARIANCES]
    ax.errorbar(
        VARIANCES,
        [x.mean for x in m],
        yerr=[x.std for x in m],
        marker=marker,
        capsize=3,
        label=kind,
    )
ax.axhline(psnr_of["none", 0.0].mean, ls="--", color="gray", label="no noise")
ax.set_xscale("log")
ax.set_xlabel("variance of the noise on the gradient")
ax.set_ylabel("PSNR of DLG (dB)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# **Paper vs ours.**

# %%
READING = {
    1e-4: "the leak is not prevented",
    1e-3: "the leak happens, with artifacts",
    1e-2: "DLG fails (defended)",
    1e-1: "DLG fails (defended)",
}
SEEN = {  # what the reconstructions above show, per variance
    1e-4: "as the paper: the digit is plainly recognizable, lightly speckled",
    1e-3: "as the paper: the digit is recognizable under heavy speckle",
    1e-2: "as the paper: noise only, no digit",
    1e-1: "as the paper: noise only, no digit",
}
table = PaperVsOurs(
    f"Ours: {data.name} ({'real MNIST digits, 28x28' if data.is_mnist else '8x8 digits'}), "
    "DLG's sigmoid LeNet at its initial U(-0.5, 0.5) weights, one image per client and one "
    "local SGD step, DLG (L-BFGS, soft labels) on one client's update per run; "
    f"{len(SEEDS)} seeds (model weights, image and dummy initialization); up to "
    f"{CLEAN_ITERATIONS} L-BFGS steps without noise, {NOISY_ITERATIONS} with; scale {SCALE}. "
    "PSNR in dB of the reconstruction against the original, pixels in [0, 1]."
)
clean_labels = MeanStd.of([r["label_accuracy"] for r in records["none", 0.0]])
table.add(
    "DLG without noise: reconstruction",
    paper="pixel-wise accurate",
    source="abstract; §4.1, Fig. 3 (MNIST, CIFAR-100, SVHN, LFW)",
    ours=psnr_of["none", 0.0],
    note=f"labels right in {clean_labels.mean:.0%} of runs; one MNIST image, not CIFAR or LFW; "
    "the paper shows images, not PSNR, so the number is ours alone",
)
for kind in KINDS:
    for v in VARIANCES:
        table.add(
            f"{kind} noise, variance {v:.0e}",
            paper=READING[v],
            source="§5.1 noisy gradients (reading not verified verbatim here)",
            ours=psnr_of[kind, v],
            note=SEEN[v],
        )
table  # noqa: B018 (Jupyter shows it)

# %% [markdown]
# **Where ours differs, and why.** Without noise DLG recovers the MNIST digit pixel for pixel
# (PSNR far above the 30-40 dB at which two images look identical) and its label, in every
# seed: the paper's first claim holds on real MNIST. Under noise our reconstructions read as
# the paper reads its own: at variance 1e-4 the digit is plainly there (about 22-23 dB, a light
# speckle), at 1e-3 it is still recognizable under heavy speckle (about 13 dB: the leak with
# artifacts), and at 1e-2 and 1e-1 only noise is left (3-4 dB: defended); Gaussian and
# Laplacian noise of the same variance do alike. The differences are of setting, not of
# outcome: one 28x28 grey MNIST digit through the paper code's 10-class LeNet rather than the
# paper's CIFAR-100, SVHN and LFW images; PSNR, which the paper does not report (it shows the
# images and the matching loss), so the numbers in the "ours" column have nothing to be
# compared with; the subset of MNIST shipped here (8,000 training digits) rather than all
# 60,000; and a cap of 30 L-BFGS steps under noise (checked above: it leaves PSNR unchanged
# at 1e-4 and 1e-3). The noise is a what-if on the gradient the server reads, as in the paper,
# not privfl's `[defense.dp]`, which also clips and accounts.
#
# **Run time on this machine** (2 shared CPU cores, one torch thread; measured while other jobs
# shared the cores): small scale (2 seeds, no noise and variance 1e-2, 5 / 3 L-BFGS steps)
# about 15 s; default scale (3 seeds, the full grid, 300 / 30 steps) 1.5-3 min (88 s for the
# committed run on an idle machine; 168 s, and 7.5 min under three times the load, in earlier
# runs); paper scale (10 seeds, 300 steps everywhere) about 1-3 hours, extrapolated from the
# default run (each noisy run then takes all
# 300 steps, ten times the default's 30). Every scale runs on MNIST when `PRIVFL_MNIST_DIR`
# names its IDX files (`privfl data fetch mnist`), else on the bundled 8x8 digits.

# %%
elapsed = time.perf_counter() - START
print(f"this run: scale {SCALE}, {elapsed:.0f} s")
if SCALE == "small":
    print("small scale: the claims are not checked")
else:  # the claims, checked
    assert psnr_of["none", 0.0].mean > 40, "DLG without noise should recover the image"
    assert all(r["label_accuracy"] == 1.0 for r in records["none", 0.0])
    for kind in KINDS:
        assert psnr_of[kind, 1e-1].mean < 12 and psnr_of[kind, 1e-2].mean < 12, kind
        assert psnr_of[kind, 1e-4].mean > psnr_of[kind, 1e-3].mean > psnr_of[kind, 1e-2].mean
        assert psnr_of[kind, 1e-4].mean < psnr_of["none", 0.0].mean
    print("checked")
