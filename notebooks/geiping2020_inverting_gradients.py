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
# # Geiping et al. 2020: Inverting Gradients, on a FedAvg update of several local steps
#
# *Inverting Gradients - How easy is it to break privacy in federated learning?* (NeurIPS 2020,
# [arXiv 2003.14053](https://arxiv.org/abs/2003.14053); code:
# [JonasGeiping/invertinggradients](https://github.com/JonasGeiping/invertinggradients)).
#
# **The claim.** Abstract: "by exploiting a magnitude-invariant loss along with optimization
# strategies based on adversarial attacks, we show that is is actually possible to faithfully
# reconstruct images at high resolution from the knowledge of their parameter gradients",
# and "even averaging gradients over several iterations or several images does not protect
# the user's privacy in federated learning applications". For federated averaging the attacker
# replays the client's local steps on its candidate images (the reference code's `loss_steps`
# and `FedAvgReconstructor`) and matches the resulting update.
#
# **The paper's settings, as its reference code sets them** (we could not reach the paper's
# full text from this machine, so the table numbers of its federated-averaging experiment are
# not copied here; the settings below are read from the code):
#
# | setting | reference code (file) | ours, default scale |
# | --- | --- | --- |
# | objective | cosine similarity (`cost_fn='sim'`) + TV (`options.py`) | the same |
# | TV weight | 1e-4 (`--tv`; 1e-6 in the multi-step notebook [1]) | 1e-4 |
# | optimizer | signed Adam, boxed, 0.1, decay at 3/8, 5/8, 7/8 (`rec_mult.py`) | the same |
# | iterations | 4,800 (`rec_mult.py`), 24,000 (`reconstruct_image.py`) | 800 (CPU) |
# | restarts | 1 (`--restarts`; 8 in [1]) | 1 |
# | local learning rate | 1e-4 (`local_lr`, `rec_mult.py`, `reconstruct_image.py`, [1]) | 1e-4 |
# | local steps | `--accumulation` (5 in [1]) | 5 |
# | local batch | full (`--batch_size` 0, `rec_mult.py`) | full, 1 image a client |
#
# [1]: `Multiple images and multiple local update steps (ConvNet).ipynb`.
#
# **Ours.** `examples/inversion.toml` with those settings: DLG's sigmoid LeNet at its initial
# weights (the paper's "LeNet (Zhu)" for its CIFAR-10 comparison), every client holding one
# image and taking 5 full-batch SGD steps at learning rate 1e-4, so the server sees an update of
# five local steps. The server runs Inverting Gradients (`attack.inversion.method = "ig"`) on it
# twice: replaying the 5 local steps on its candidate image (the paper's attack,
# `replay = true`) and reading the update as one gradient (`replay = false`, the ablation).
# Labels are recovered from the last layer, not given. CIFAR-10 and ImageNet cannot be shipped:
# the images are MNIST digits (with `PRIVFL_MNIST_DIR`; else the 8x8 digits), so nothing here
# is a match of the paper's numbers, only of its claim.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt

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

SEEDS = at_scale(small=[0, 1], default=list(range(6)), paper=list(range(10)))
ITERATIONS = at_scale(small=20, default=800, paper=4800)
LOCAL_LR, LOCAL_STEPS, TV = 1e-4, 5, 1e-4
print(f"scale {SCALE}: {len(SEEDS)} seeds, {ITERATIONS} IG iterations")


def ig_run(seed, replay):
    """One FedAvg round; the server runs IG on one client's 5-step update; returns its record."""
    sets = [
        f"seed={seed}",
        f"data.clients={N_TRAIN}",
        "federation.clients_per_round=1",
        f"federation.local_steps={LOCAL_STEPS}",
        f"federation.lr={LOCAL_LR}",
        "federation.batch_size=full",
        "attack.inversion.method=ig",
        "attack.inversion.max_targets=1",
        "attack.inversion.images=true",
        f"attack.inversion.iterations={ITERATIONS}",
        "attack.inversion.lr=0.1",
        f"attack.inversion.tv={TV}",
        f"attack.inversion.replay={str(replay).lower()}",
    ]
    sets += [f"data.{k}={v}" for k, v in data.section.items()]
    (record,) = privfl.run(privfl.load_config(EXAMPLE, sets), out=None, progress=False).attacks
    return record


records = {}
for replay in (True, False):
    t0 = time.perf_counter()
    records[replay] = [ig_run(seed, replay) for seed in SEEDS]
    rs = records[replay]
    print(
        f"replay={replay!s:5s}: PSNR {MeanStd.of([r['psnr'] for r in rs]).format('.1f')} dB "
        f"(each {[round(r['psnr'], 1) for r in rs]}), SSIM "
        f"{MeanStd.of([r['ssim'] for r in rs]).format('.3f')}, label accuracy "
        f"{[r['label_accuracy'] for r in rs]}, {time.perf_counter() - t0:.0f} s"
    )
GAIN = [a["psnr"] - b["psnr"] for a, b in zip(records[True], records[False], strict=True)]
REPLAY_WINS = sum(g > 0 for g in GAIN)
print(
    f"replaying the steps, minus one gradient, per seed: {[round(g, 1) for g in GAIN]} dB "
    f"(higher in {REPLAY_WINS} of {len(GAIN)} seeds)"
)

# %% [markdown]
# **Reconstructions beside their originals**: per seed, the client's image, IG replaying the
# five local steps, and IG reading the update as one gradient.

# %%
rows = [("original", None), ("IG, replay", True), ("IG, one gradient", False)]
fig, axes = plt.subplots(3, len(SEEDS), figsize=(1.7 * len(SEEDS), 5.2), squeeze=False)
for j, seed in enumerate(SEEDS):
    for i, (name, replay) in enumerate(rows):
        original, rec, psnr = record_images(records[True if replay is None else replay][j])
        img = original if replay is None else rec
        axes[i][j].imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
        axes[i][j].set_xticks([])
        axes[i][j].set_yticks([])
        axes[i][j].set_xlabel(f"seed {seed}" if replay is None else f"{psnr[0]:.1f} dB", fontsize=7)
        if j == 0:
            axes[i][j].set_ylabel(name, fontsize=8)
fig.suptitle(f"{LOCAL_STEPS} local steps, local lr {LOCAL_LR:g}", fontsize=9)
plt.tight_layout()
plt.show()

# %%
psnr = {r: MeanStd.of([x["psnr"] for x in records[r]]) for r in (True, False)}
ssim = {r: MeanStd.of([x["ssim"] for x in records[r]]) for r in (True, False)}
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(
    ["replay the steps", "one gradient"],
    [psnr[True].mean, psnr[False].mean],
    yerr=[psnr[True].std, psnr[False].std],
    capsize=4,
)
ax.set_ylabel(f"PSNR (dB), mean ± std over {len(SEEDS)} seeds")
ax.set_title(f"IG on a {LOCAL_STEPS}-step FedAvg update", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Paper vs ours.**

# %%
table = PaperVsOurs(
    f"Ours: {data.name} ({'real MNIST digits, 28x28' if data.is_mnist else '8x8 digits'}), "
    "DLG's sigmoid LeNet at its initial weights, one image per client, "
    f"{LOCAL_STEPS} full-batch local SGD steps at lr {LOCAL_LR:g}; IG with cosine similarity, "
    f"TV {TV:g}, signed Adam (0.1, step decay), {ITERATIONS} iterations, 1 restart, labels "
    f"recovered; {len(SEEDS)} seeds (model weights, image, initialization); scale {SCALE}."
)
table.add(
    "IG on a multi-step FedAvg update, replaying the steps: PSNR (dB)",
    paper="recognizable reconstructions (numbers of its FedAvg table not verified here)",
    source="abstract; federated-averaging section and table",
    ours=psnr[True],
    note="MNIST digits through a small LeNet, not CIFAR-10 through a ConvNet/ResNet; "
    f"{ITERATIONS} iterations instead of 4,800-24,000",
)
table.add(
    "same, SSIM",
    paper="not reported here",
    source="-",
    ours=ssim[True],
    note="1 is a perfect reconstruction",
)
table.add(
    "ablation: IG reading the update as one gradient: PSNR (dB)",
    paper="not run in the paper (its attack replays the steps)",
    source="reference code: `FedAvgReconstructor`, `loss_steps`",
    ours=psnr[False],
    note=f"{psnr[False].mean - psnr[True].mean:+.1f} dB against replaying, on average; replay "
    f"was higher in {REPLAY_WINS} of {len(GAIN)} seeds. At local lr 1e-4 the 5-step update is "
    "five times the first gradient up to terms of order 1e-4 (the cosine ignores the factor), "
    "so reading it as one gradient loses little, and each seed's optimization path decides",
)
table  # noqa: B018 (Jupyter shows it)

# %% [markdown]
# **Where ours differs, and why.** The paper's claim holds here: from an update of five local
# steps the server recovers the client's digit without being given the label, in most seeds
# far above the 30 dB at which a digit reads cleanly (PSNR and label accuracy of each seed
# above; the check below asserts the median above 30 dB and every label), in some with
# speckle (25-35 dB). Replaying the local steps (the ablation) is not reliably better at
# this local learning rate: the two readings' means are within their spread over seeds, and
# each wins in some seeds. At the paper's local learning rate of 1e-4 the five steps change
# the weights by about 1e-4 of their size, so the update is five times the first gradient up
# to terms of that order, and the cosine objective ignores the factor five: reading the
# update as one gradient loses little. A seed's PSNR is not a stable figure either: seed 0
# gave 61.7 dB on the update the sequential engine computes and 47.6 dB on the vectorized
# engine's, two updates that differ by one float32 rounding of the weights (6e-8 at most);
# IG's 800 signed-Adam steps end in different places from such a start. Read the mean over
# seeds, not a seed. (An earlier execution, on three seeds, had replaying ahead by 8-16 dB in
# each; six seeds do not bear that out.) Replaying should matter where local training moves
# the weights more (larger local learning rates, several images over several mini-batches);
# we measured (outside this notebook, one seed, 300 iterations) clients of 2 or
# 4 images with mini-batches of 1 or 2 at local learning rates 1e-4 to 1.0, and IG failed
# either way (4-11 dB): such batches need many more iterations (the paper runs thousands on
# GPUs) and their labels were not all recovered, which is out of this notebook's CPU budget.
# Our images are 28x28 grey MNIST digits (an 8,000-digit subset of MNIST) through a 3-layer
# sigmoid LeNet rather than 32x32 colour CIFAR-10 images through a ConvNet or ResNet, which
# makes the inversion easier; we run 800 iterations where the reference code runs 4,800 to
# 24,000.
#
# **Run time on this machine** (2 shared CPU cores, one torch thread, measured while other jobs
# shared the cores): small scale (2 seeds, 20 iterations) 11-28 s; default scale (6 seeds,
# 800 iterations) about 1.5-2 min (92 s for the committed run); paper scale (10 seeds, 4,800
# iterations, the `rec_mult.py` default) about 20 minutes, extrapolated from the default run.
# Every scale runs on MNIST when `PRIVFL_MNIST_DIR` names its IDX files (`privfl data fetch
# mnist`), else on the bundled 8x8 digits.

# %%
elapsed = time.perf_counter() - START
print(f"this run: scale {SCALE}, {elapsed:.0f} s")
if SCALE == "small":
    print("small scale: the claim is not checked")
else:  # the claim, checked
    replayed = sorted(r["psnr"] for r in records[True])
    assert replayed[len(replayed) // 2] > 30, "IG should recover the image in most seeds"
    assert all(r["label_accuracy"] == 1.0 for r in records[True])
    print("checked")
