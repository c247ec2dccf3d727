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
# # Bagdasaryan et al. 2019: DP-SGD costs an under-represented class more accuracy
#
# Eugene Bagdasaryan, Omid Poursaeed, Vitaly Shmatikov, *Differential Privacy Has Disparate
# Impact on Model Accuracy* (NeurIPS 2019, arXiv 1905.12101).
#
# **The claim** (abstract): "in the neural networks trained using differentially private
# stochastic gradient descent (DP-SGD), this cost is not borne equally: accuracy of DP models
# drops much more for the underrepresented classes and subgroups." The introduction adds
# "accuracy of DP models tends to decrease more on classes that already have lower accuracy in
# the original, non-DP model, i.e., 'the poor become poorer'", and "To explain why DP-SGD has
# disparate impact, we use MNIST to study the effec[t] ..." of clipping, noise and the other
# hyperparameters (its MNIST section and figure).
#
# **The paper's MNIST setup.** We could read the paper's abstract and introduction here, but not
# its MNIST section, so the setup below is taken from the authors' code
# (github.com/ebagdasa/differential-privacy-vs-fairness, `utils/params_mnist.yaml`, used by
# `playing.py`): class `key_to_drop: 8` down-sampled to `number_of_entries: 500` training
# examples (of MNIST's 5,851 eights; the other classes whole, the test set whole), the
# LeNet-style `Net` of `models/simple.py` (conv 20, conv 50, dense 500), `batch_size: 256`,
# `num_microbatches: 256` (one example each: per-example clipping), `lr: 0.01`, `momentum: 0.5`,
# `S: 1` (clip), `z: 0.8` (noise multiplier sigma), `epochs: 60`, and accuracy measured per class
# on the test set. **Not verified here:** the per-class accuracies that the paper's MNIST figure
# plots, and the epsilon it prints for this setting: the table below says so rather than
# quoting them from memory.
#
# **Centralized, or federated?** The MNIST experiment is centralized DP-SGD. The paper also has a
# federated experiment (introduction, item (4): "federated learning of language models, where
# DP-SGD disproportionately degrades accuracy for users with bigger vocabularies": user-level
# DP-FedAvg on Reddit), which needs data we do not ship. privfl trains federations, so we run the
# MNIST experiment as a federation of **one client holding the whole training set**,
# `clients_per_round = 1`, one local epoch a round and sample-level DP-SGD inside the client
# (`[defense.dp] mode = "sample"`): the server's FedAvg of a single client is that client's
# model, so `R` rounds are exactly `R` epochs of centralized DP-SGD, with the same per-example
# clipping, Gaussian noise and (epsilon, delta) accounting per training example.

# %%
import logging
import time

import matplotlib.pyplot as plt
import numpy as np

import privfl
from privfl.data.federated import build_federated_data
from privfl.evaluation import per_class_accuracy
from privfl.reproduce import MeanStd, PaperVsOurs, at_scale, current_scale, mnist_or_digits

# Every DP run logs that its noise is seeded (secure_rng = false: reproducible research runs,
# not a release); said once here instead of once a run.
logging.getLogger("privfl").setLevel(logging.ERROR)
SCALE = current_scale()
UNDER = 8  # the down-sampled class (the paper's key_to_drop)
PAPER_KEPT, PAPER_BEFORE = 500, 5851  # the paper's 8s: kept / in MNIST's training set
FRACTION = PAPER_KEPT / PAPER_BEFORE  # the same share on any training set
DATA = mnist_or_digits(clients=1, class_fraction={UNDER: FRACTION})
print(DATA.note)
print(f"scale: {SCALE}")

# %% [markdown]
# ## Setting, per scale
#
# | | small (tests) | default (committed) | paper |
# | --- | --- | --- | --- |
# | data | mnist-10k (`PRIVFL_MNIST_DIR`) | mnist-10k (8,000 / 2,000) | MNIST (60,000 / 10,000) |
# | 8s kept | 8.5% of them | 8.5%: 65 of 755 | 500 of 5,851 |
# | model | MLP 784-32-10 | MLP 784-32-10 | the paper's CNN (conv 20, conv 50, dense 500) |
# | epochs (rounds) | 1 | 20 | 60 |
# | batch, lr, momentum | 256, 0.2, 0.5 | 256, 0.2, 0.5 | 256, 0.01, 0.5 |
# | DP-SGD | S = 1, sigma = 0.8 | S = 1, sigma = 0.8 | S = 1, sigma = 0.8 |
# | seeds | 2 | 3 | 3 |
#
# The down-sampled count is scaled with the training set: the paper keeps 500 / 5,851 = 8.5% of
# the 8s, and so do we (`[data] class_fraction = {8 = 0.08545}`: 65 of mnist-10k's 755 training
# 8s; every other class and the whole test split untouched). The 8s are then 0.89% of our
# training set, as 500 of 54,649 (0.91%) are of the paper's. At the default scale the model is a
# small MLP and training is 20 epochs at a higher learning rate, to fit the notebook's time
# budget on a laptop CPU (per-example gradients of the paper's CNN cost minutes an epoch here);
# the paper scale keeps the authors' settings but privfl's CNN pads its convolutions
# (`padding = k // 2`), so its dense layer is wider than the paper's.
#
# **Run time on this machine** (2 shared CPU cores, `OMP_NUM_THREADS=1`): small about 25 s;
# default 15 s to 3 minutes with the load (14 s for the committed run, idle; its time is
# printed at its end); paper
# scale not run: the paper's CNN trained here at about 2.5 ms per example and epoch without DP,
# so about 2 hours for each non-private run on 54,649 images for 60 epochs, and (per-example
# gradients of its 1.2M weights, 5 to 10 times the cost, as for our MLP) 10 to 20 hours for each
# clip-only or DP-SGD run: 3 seeds of the three settings take days on this CPU, so a GPU is
# advised. It needs the full MNIST files (`privfl data fetch mnist --dir D`, then
# `PRIVFL_MNIST_DIR=D`).

# %%
EPOCHS = at_scale(small=1, default=20, paper=60)
LR = at_scale(small=0.2, default=0.2, paper=0.01)
SEEDS = at_scale(small=[0, 1], default=[0, 1, 2], paper=[0, 1, 2])
MLP = {"name": "mlp", "hidden": [32]}
PAPER_CNN = {
    "name": "cnn",
    "channels": [20, 50],
    "kernel_size": 5,
    "hidden": [500],
    "norm": "none",
}
MODEL = at_scale(small=MLP, default=MLP, paper=PAPER_CNN)
CLIP, SIGMA, BATCH, DELTA = 1.0, 0.8, 256, 1e-5


def config(seed: int, sigma: float | None) -> privfl.Config:
    """One client holding the (down-sampled) training set; DP-SGD when sigma is given."""
    section = {
        "name": f"disparate-{seed}-{sigma}",
        "seed": seed,
        "data": DATA.section,
        "model": MODEL,
        "federation": {
            "rounds": EPOCHS,
            "clients_per_round": 1,
            "local_epochs": 1,
            "batch_size": BATCH,
            "lr": LR,
            "momentum": 0.5,
        },
    }
    if sigma is not None:
        section["defense"] = {
            "dp": {"mode": "sample", "clip": CLIP, "noise_multiplier": sigma, "delta": DELTA}
        }
    return privfl.Config(**section)


SETTINGS = {  # label: noise multiplier (None: no DP-SGD)
    "no DP": None,
    "clip only (sigma 0)": 0.0,
    f"DP-SGD (S {CLIP:g}, sigma {SIGMA:g})": SIGMA,
}
start = time.perf_counter()
test = build_federated_data(config(SEEDS[0], None).data, SEEDS[0])
print("kept:", [d.to_record() for d in test.downsampled])
x_test, y_test = test.bundle.test.x, test.bundle.test.y
K = test.bundle.num_classes
print(f"test examples per class: {np.bincount(y_test.numpy(), minlength=K).tolist()}")

per_class = {label: [] for label in SETTINGS}  # label -> one (K,) array per seed
overall = {label: [] for label in SETTINGS}
epsilon = []
SECONDS = {}
for label, sigma in SETTINGS.items():
    t0 = time.perf_counter()
    for seed in SEEDS:
        run = privfl.run(config(seed, sigma), out=None, progress=False)
        per_class[label].append(per_class_accuracy(run.model, x_test, y_test, K))
        overall[label].append(run.final_accuracy)
        if sigma:
            epsilon.append(run.ledger.epsilon())
    SECONDS[label] = time.perf_counter() - t0
    acc = np.mean(per_class[label], axis=0)
    print(
        f"{label:26s} overall {np.mean(overall[label]):.3f}   class {UNDER}: {acc[UNDER]:.3f}   "
        f"({SECONDS[label]:.0f} s for {len(SEEDS)} seeds)"
    )
print(f"DP-SGD epsilon at delta {DELTA:g}: {np.mean(epsilon):.2f} (one example; {EPOCHS} epochs)")

# %% [markdown]
# ## Per-class accuracy with and without DP (the paper's figure type)
#
# Bars: mean test accuracy of each class over the seeds (error bars: std); the down-sampled
# class is highlighted. Right: each class's accuracy drop caused by DP-SGD (no DP minus DP).

# %%
LABELS = list(SETTINGS)
NO_DP, CLIP_ONLY, DP = LABELS
classes = np.arange(K)
mean = {k: np.mean(v, axis=0) for k, v in per_class.items()}
std = {k: np.std(v, axis=0, ddof=1) for k, v in per_class.items()}
drops = np.array(per_class[NO_DP]) - np.array(per_class[DP])  # (seeds, K)
others = [c for c in classes if c != UNDER]

fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 1]})
width = 0.27
colors = ["tab:blue", "tab:orange", "tab:red"]
for i, (label, color) in enumerate(zip(LABELS, colors, strict=True)):
    ax.bar(
        classes + (i - 1) * width,
        mean[label],
        width,
        yerr=std[label],
        capsize=2,
        color=color,
        label=label,
    )
ax.axvspan(
    UNDER - 0.5,
    UNDER + 0.5,
    color="gold",
    alpha=0.25,
    zorder=0,
    label=f"class {UNDER}: {FRACTION:.1%} of its examples kept",
)
ax.set(
    xticks=classes,
    xlabel="class",
    ylabel="test accuracy",
    ylim=(0, 1.3),
    title="Per-class accuracy with and without DP-SGD",
)
ax.get_xticklabels()[UNDER].set(color="darkred", fontweight="bold")
ax.legend(loc="upper center", ncol=2, fontsize=8)
bar_colors = ["darkred" if c == UNDER else "grey" for c in classes]
bx.bar(classes, drops.mean(axis=0), yerr=drops.std(axis=0, ddof=1), capsize=2, color=bar_colors)
bx.set(
    xticks=classes,
    xlabel="class",
    ylabel="accuracy drop (no DP - DP)",
    title="What DP-SGD costs each class",
)
plt.tight_layout()
plt.show()
print("mean test accuracy per class " + " ".join(f"{c:>5d}" for c in classes))
for label in LABELS:
    print(f"{label:28s} " + " ".join(f"{a:5.2f}" for a in mean[label]))
weak = mean[NO_DP][others]
r = np.corrcoef(weak, drops.mean(axis=0)[others])[0, 1]
poorer = "as in" if r < 0 else "unlike"
print(
    f"the other 9 classes: correlation of no-DP accuracy with DP-SGD's drop r = {r:.2f}, "
    f"{poorer} the paper's 'the poor become poorer' (r < 0: the least-known classes lose most)"
)

# %% [markdown]
# ## Paper vs ours

# %%
drop_under = MeanStd.of(drops[:, UNDER])
drop_others = MeanStd.of(drops[:, others].mean(axis=1))
clip_drops = np.array(per_class[NO_DP]) - np.array(per_class[CLIP_ONLY])
clip_under = MeanStd.of(clip_drops[:, UNDER])
clip_others = MeanStd.of(clip_drops[:, others].mean(axis=1))
acc_under = {k: MeanStd.of(np.array(v)[:, UNDER]) for k, v in per_class.items()}
acc_others = {k: MeanStd.of(np.array(v)[:, others].mean(axis=1)) for k, v in per_class.items()}
AUTHORS = "authors' code, utils/params_mnist.yaml"
UNVERIFIED = "plotted in the paper's MNIST figure; value not verified here"
scale_note = (
    f"Our setting: {DATA.name} ({len(test.bundle.train)} training images after down-sampling, "
    f"{len(y_test)} test), {MODEL['name']} {MODEL.get('hidden', '')}, one client holding all the "
    f"data (= centralized DP-SGD), {EPOCHS} epochs, batch {BATCH} (Poisson lots), lr {LR}, "
    f"momentum 0.5, {len(SEEDS)} seeds, scale {SCALE}."
)
table = PaperVsOurs(scale_note)
table.add(
    f"training examples of class {UNDER} kept",
    paper=f"{PAPER_KEPT} of {PAPER_BEFORE}",
    source=f"{AUTHORS} (key_to_drop: 8, number_of_entries: 500)",
    ours=f"{test.downsampled[0].kept} of {test.downsampled[0].before}",
    note="same share (8.5%) of a 10k-image MNIST subset, not the 60k training set",
)
table.add(
    "DP-SGD parameters",
    paper="S 1, z 0.8, batch 256, 60 epochs, lr 0.01, momentum 0.5",
    source=AUTHORS,
    ours=f"S {CLIP:g}, sigma {SIGMA:g}, batch {BATCH}, {EPOCHS} epochs, lr {LR}, momentum 0.5",
    note="fewer epochs, higher lr and an MLP instead of the CNN, for the CPU time budget",
)
table.add(
    "epsilon of the DP-SGD run",
    paper="not verified here",
    source="paper's MNIST section",
    ours=MeanStd.of(epsilon),
    note=f"ours at delta {DELTA:g}, RDP accountant, Poisson lots q = {BATCH}/"
    f"{len(test.bundle.train)}, {EPOCHS} epochs",
)
table.add(
    f"class {UNDER} accuracy, no DP -> DP",
    paper="not verified here",
    source=UNVERIFIED,
    ours=f"{acc_under[NO_DP].format('.3f')} -> {acc_under[DP].format('.3f')}",
    note="our non-private model learns the 8s less well than the paper's CNN (smaller model, "
    "fewer epochs)",
)
table.add(
    "mean accuracy of the other 9 classes, no DP -> DP",
    paper="not verified here",
    source=UNVERIFIED,
    ours=f"{acc_others[NO_DP].format('.3f')} -> {acc_others[DP].format('.3f')}",
    note="the well-represented classes lose little",
)
table.add(
    f"accuracy drop of class {UNDER} (no DP - DP)",
    paper="much larger than the others' (the claim)",
    source="abstract; paper's MNIST figure",
    ours=drop_under,
    note="the claim holds: the under-represented class pays most of DP's cost",
)
table.add(
    "mean accuracy drop of the other 9 classes",
    paper="not verified here",
    source=UNVERIFIED,
    ours=drop_others,
    note="a few points: the majority classes pay little",
)
poor_r = MeanStd.of(
    np.corrcoef(np.array(per_class[NO_DP])[i, others], drops[i, others])[0, 1]
    for i in range(len(SEEDS))
)
table.add(
    "correlation, over the other 9 classes, of no-DP accuracy with DP's drop",
    paper="negative: 'the poor become poorer'",
    source="introduction",
    ours=poor_r,
    note=("as the paper says" if poor_r.mean < 0 else "unlike the paper")
    + ": the classes the non-private model knows least lose most",
)
table.add(
    f"ablation: class {UNDER} drop with clipping alone (sigma 0)",
    paper="'combining common regularizers clipping and noise together significantly reduces "
    "accuracy on smaller classes'",
    source="authors' NeurIPS poster (repository, poster/), MNIST panel",
    ours=clip_under,
    note="differs: here clipping alone already costs the 8s as much as DP-SGD (others' mean "
    f"drop {clip_others.format('.3f')}); see below",
)
table  # noqa: B018 (Jupyter shows it)

# %% [markdown]
# ## Reading the result
#
# DP-SGD (per-example clip S = 1, noise sigma = 0.8) takes a few points of accuracy from the nine
# well-represented classes and all that the model had learnt of the down-sampled 8s: the 8s are
# under one example in a hundred of every lot, their gradients (large, since the model gets them
# wrong) are clipped to the same norm as everyone else's, and the noise is calibrated to a single
# example, so the model's updates follow the majority classes. This is the paper's claim,
# measured here on a 10k-image MNIST subset with an MLP rather than on full MNIST with the
# paper's CNN; the paper's own per-class numbers and epsilon are not quoted because we could not
# read its MNIST section from this machine. Among the nine other classes the same pattern shows
# on a small scale, the paper's "the poor become poorer": the classes the non-private model
# knows least lose the most to DP-SGD (class 5 above all; the correlation row of the table).
#
# The clip-only ablation (sigma = 0, no noise, no privacy) separates the two mechanisms, and
# here our runs differ from the authors' account: **clipping alone already removes the 8s**
# (the same drop as full DP-SGD, within the seeds' spread), and the noise adds only a little
# loss, to the other classes. The authors' poster says of their MNIST runs "combining common
# regularizers clipping and noise together significantly reduces accuracy on smaller classes",
# putting the damage on the combination (the paper's own MNIST ablation figure, which we could
# not read, is not quoted). Likely cause: our non-private model has learnt the 8s only to
# about 48% after 20 epochs, and clipping at S = 1 shrinks every step, most of all the large
# gradients of the misclassified 8s, so within our epoch budget the rare class is never learnt,
# with or without noise; an accuracy of 0 cannot show a further loss from the noise. Longer
# training (40 epochs, tried while preparing this notebook) left the clipped 8s at 2%.

# %%
TOTAL = time.perf_counter() - start
print(
    f"run time at scale {SCALE}: {TOTAL:.0f} s "
    + ", ".join(f"{k}: {v:.0f} s" for k, v in SECONDS.items())
)
if SCALE != "small":  # the claim, checked where the runs are long enough to mean something
    assert drop_under.mean > 0.2, drop_under
    assert drop_under.mean > 3 * drop_others.mean, (drop_under, drop_others)
    assert acc_under[DP].mean < acc_under[NO_DP].mean - 0.2
    print(
        f"claim holds: class {UNDER} loses {drop_under.format('.3f')} accuracy to DP-SGD, the "
        f"other classes {drop_others.format('.3f')} on average"
    )
