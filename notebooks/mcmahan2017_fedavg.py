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
# # McMahan et al. 2017: FedAvg needs fewer communication rounds than FedSGD
#
# H. B. McMahan, E. Moore, D. Ramage, S. Hampson, B. Agüera y Arcas, *Communication-Efficient
# Learning of Deep Networks from Decentralized Data*, AISTATS 2017
# ([arXiv:1602.05629](https://arxiv.org/abs/1602.05629)).
#
# **The claim.** Federated Averaging (each of the round's clients runs `E` epochs of SGD with
# minibatch `B` on its own data, then the server averages the models) reaches a target test
# accuracy in far fewer communication rounds than FedSGD (`E = 1`, `B = ∞`: one full-batch
# gradient step a round), on IID data and, by less, on a pathological non-IID split (each of
# 100 clients holds 2 shards of label-sorted data, so mostly 2 digits); more local computation
# (larger `E`, smaller `B`) cuts the rounds further. Section 3: "using more computation per
# client decreases the number of rounds to reach the target accuracy by 35× for the CNN and
# 46× for the 2NN" on IID data, and "the speedups for the pathologically partitioned non-IID
# data are smaller, but still substantial (2.8 – 3.7×)".
#
# The paper's numbers (arXiv v4 text, `C = 0.1`, learning rate tuned per setting; a target of
# 99% test accuracy for the CNN and 97% for the 2NN):
#
# | model, source | setting | `u` | IID rounds | non-IID rounds |
# | --- | --- | --- | --- | --- |
# | CNN, Table 2 | FedSGD (`E = 1`, `B = ∞`) | 1 | 626 | 483 |
# | CNN, Table 2 | FedAvg `E = 1`, `B = 10` | 60 | 34 (18.4×) | 350 (1.4×) |
# | CNN, Table 2 | FedAvg `E = 5`, `B = 10` | 300 | 20 (31.3×) | 229 (2.1×) |
# | CNN, Table 2 | FedAvg `E = 20`, `B = 10` | 1200 | 18 (34.8×) | 173 (2.8×) |
# | 2NN, Table 1 (`C = 0.1`, `E = 1`) | `B = ∞` (FedSGD) | 1 | 1474 | 1796 |
# | 2NN, Table 1 (`C = 0.1`, `E = 1`) | `B = 10` | 60 | 87 | 664 |
#
# The speed-ups in brackets are Table 2's, relative to its FedSGD row; `u = E n / (K B)` is the
# expected number of local updates a round (`n / K = 600` examples a client). Table 1's
# brackets are speed-ups over one client a round (`C = 0`), not over FedSGD, so they are not
# copied; divided by us, its 2NN rows give 1474 / 87 = 16.9× (IID) and 1796 / 664 = 2.7×
# (non-IID) for `E = 1, B = 10` over FedSGD. The 2NN's own `E`, `B` grid is the paper's Table 4
# (Appendix A), whose entries we could not read in the text we had (only its caption): none of
# its numbers is quoted here.
#
# **Ours.** The paper's 2NN (784-200-200-10, ReLU, 199,210 parameters), which the vectorized
# engine trains fast on a CPU; the CNN (1,663,370 parameters) would not fit the budget. Real
# MNIST at the default scale, but the 10,000-image subset shipped for development (8,000
# training, 2,000 test): 100 clients of 80 examples (the paper: 600), IID or 200 label-sorted
# shards of 40, two a client; `C = 0.1` (10 clients a round). FedSGD, FedAvg `E = 1, B = 10`
# and FedAvg `E = 5, B = 10`; each setting's learning rate picked on the first of three seeds
# from a window of the paper's multiplicative grid (`10^(k/6)`), the other two run at that rate.
# Rounds to the target are counted the paper's way: the best test accuracy so far, linearly
# interpolated between evaluated rounds, where it crosses the target.
#
# **The target** is 93% test accuracy, not the paper's 97% (2NN) or 99% (CNN): our 2NN, trained
# on 8,000 images, levels off near 95% in trial runs, so 97% is out of reach, and FedSGD must
# reach the target within the budget for the speed-up to exist. 93% is two points below that
# level; FedSGD reaches it in about 150-300 rounds.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np

import privfl
from privfl.reproduce import MeanStd, PaperVsOurs, at_scale, current_scale, mnist_or_digits

START = time.perf_counter()
SCALE = current_scale()
DATA = mnist_or_digits(clients=100)
print(DATA.note)
print(f"scale: {SCALE}")

TARGET = at_scale(small=0.7, default=0.93, paper=0.97)
SEEDS = at_scale(small=[1, 2], default=[1, 2, 3], paper=[1, 2, 3])
TUNING_SEED = SEEDS[0]  # learning rates are picked on this seed's runs
LAG = 0.05  # a tuning rate trailing the best rate's best-so-far accuracy by this is dropped
TUNE = SCALE != "small"
PARTITIONS = {"iid": "IID", "shards": "non-IID (2 shards a client)"}
EXAMPLES_PER_CLIENT = at_scale(small=80, default=80, paper=600)  # n / K: for u only
GRID = [round(10 ** (k / 6), 3) for k in range(-9, 1)]  # 0.0316 ... 1.0, the paper's grid

# label: local epochs E, batch B, learning-rate window (a slice of GRID), evaluation every,
# round cap
SETTINGS = {
    "FedSGD (E=1, B=∞)": dict(
        epochs=1,
        batch="full",
        lrs=[0.316, 0.464, 0.681, 1.0],
        every=at_scale(small=5, default=5, paper=10),
        cap=at_scale(small=50, default=600, paper=4000),
    ),
    "FedAvg E=1, B=10": dict(
        epochs=1,
        batch=10,
        lrs=[0.215, 0.316, 0.464, 0.681],
        every=1,
        cap=at_scale(small=30, default=300, paper=1500),
    ),
    "FedAvg E=5, B=10": dict(
        epochs=5,
        batch=10,
        lrs=[0.147, 0.215, 0.316, 0.464],
        every=1,
        cap=at_scale(small=15, default=300, paper=1000),
    ),
}
FEDSGD, *FEDAVG = SETTINGS
assert all(lr in GRID for s in SETTINGS.values() for lr in s["lrs"])
for label, s in SETTINGS.items():
    batch = EXAMPLES_PER_CLIENT if s["batch"] == "full" else s["batch"]
    s["u"] = s["epochs"] * EXAMPLES_PER_CLIENT / batch
    if not TUNE:  # small: the middle of each window, no tuning
        s["lrs"] = [s["lrs"][len(s["lrs"]) // 2]]
    print(f"{label:18s} u = {s['u']:4.0f}   learning rates tried: {s['lrs']}")


# %% [markdown]
# One run trains until the best test accuracy so far reaches the target (or the round cap),
# then stops: the rounds to the target are all we need, and stopping saves most of FedSGD's
# time. `rounds_to_target` is the paper's count (its Section 3): the learning curve made
# monotone by taking the best accuracy so far, and the round where it crosses the target by
# linear interpolation between evaluated rounds.


# %%
_data_cache = {}


def train(partition, label, lr, seed, cap=None, target=TARGET, lead=None):
    """Rounds and test accuracies of one run, stopped once the target is reached (or, with
    ``lead``, the best curve so far of a tuning, once it trails that curve by ``LAG``)."""
    s = SETTINGS[label]
    cap = cap or s["cap"]
    cfg = privfl.Config(
        name=f"fedavg-{partition}-{seed}",
        seed=seed,
        data={**DATA.section, "partition": partition},
        model={"name": "mlp", "hidden": [200, 200], "activation": "relu"},
        federation={
            "rounds": cap,
            "clients_per_round": 10,  # C = 0.1 of 100 clients
            "local_epochs": s["epochs"],
            "batch_size": s["batch"],
            "lr": lr,
            "engine": "vectorized",
        },
        evaluation={"every": s["every"]},
    )
    fed = privfl.Federation(cfg, data=_data_cache.get((partition, seed)))
    _data_cache[partition, seed] = fed.data
    rounds, accs = [], []
    lead_best = None
    if lead is not None:
        lead_best = dict(zip(lead[0], np.maximum.accumulate(lead[1]), strict=True))
    while fed.round < cap:
        rec = fed.run_round()
        if rec["test_accuracy"] is not None:
            rounds.append(fed.round)
            accs.append(rec["test_accuracy"])
            if accs[-1] >= target:
                break
            if lead_best and max(accs) < lead_best.get(fed.round, 0.0) - LAG:
                break
    return np.array(rounds), np.array(accs)


def rounds_to_target(curve, target=TARGET):
    """The paper's count: where the best-so-far curve crosses the target (linear
    interpolation between evaluated rounds); None when it never does."""
    rounds, accs = curve
    best = np.maximum.accumulate(accs)
    hit = np.nonzero(best >= target)[0]
    if not len(hit):
        return None
    i = hit[0]
    if i == 0:
        return float(rounds[0])
    r0, r1, a0, a1 = rounds[i - 1], rounds[i], best[i - 1], best[i]
    return float(r0 + (target - a0) / (a1 - a0) * (r1 - r0))


# %% [markdown]
# ## Learning rates
#
# The paper tuned `η` per setting over 11-13 values of a multiplicative grid, checked that the
# best sat inside the grid, and reported the best rate's curve. We try a window of 4 values
# of the same kind of grid (`10^(k/6)`) per setting and partition on the first seed (the
# windows were placed by a trial run on another seed, so that the best falls inside), keep the
# rate with the fewest rounds to the target, and run the other seeds at that rate only; the
# first seed's numbers are thus the best of its window, as all of the paper's are, and the other
# seeds' are not selected on. To save time a rate is dropped once it has used as many rounds as
# the best so far (it cannot win), or once its best accuracy so far trails the best rate's at
# the same round by 5 points (a diverging rate stops within a few rounds).

# %%
t0 = time.perf_counter()
LR, TUNED_CURVE = {}, {}
tuning_rows = []
for partition in PARTITIONS:
    for label, s in SETTINGS.items():
        if not TUNE:
            LR[partition, label] = s["lrs"][0]
            continue
        mid = len(s["lrs"]) // 2
        order = [s["lrs"][mid], *s["lrs"][mid + 1 :], *reversed(s["lrs"][:mid])]
        best_lr, best_rounds, best_curve, found = None, math.inf, None, {}
        for lr in order:
            cap = s["cap"] if best_lr is None else min(s["cap"], math.ceil(best_rounds))
            curve = train(partition, label, lr, TUNING_SEED, cap=cap, lead=best_curve)
            r = found[lr] = rounds_to_target(curve)
            if r is not None and r < best_rounds:
                best_lr, best_rounds, best_curve = lr, r, curve
        LR[partition, label] = best_lr
        TUNED_CURVE[partition, label] = best_curve
        cells = [
            (f"{found[lr]:.0f}" if found[lr] is not None else "—") + (" *" if lr == best_lr else "")
            for lr in s["lrs"]
        ]
        tuning_rows.append((PARTITIONS[partition], label, s["lrs"], cells))
TUNING_SECONDS = time.perf_counter() - t0
if TUNE:
    print(f"rounds to {TARGET:.0%} on the tuning seed ({TUNING_SEED}); *: the rate kept;")
    print("—: dropped (trailing the best rate, or not reached within its rounds)")
    for part, label, lrs, cells in tuning_rows:
        print(
            f"  {part:28s} {label:18s}",
            "  ".join(f"η={lr}: {c:6s}" for lr, c in zip(lrs, cells, strict=True)),
        )
    edge = [
        (p, lbl)
        for p, lbl, lrs, cells in tuning_rows
        if cells[0].endswith("*") or cells[-1].endswith("*")
    ]
    print("best rate at the edge of its window:", edge or "none")
    print(f"tuning took {TUNING_SECONDS:.0f} s")
else:
    print("small scale: no tuning; rates", LR)
assert all(lr is not None for lr in LR.values()), f"a setting never reached the target: {LR}"

# %% [markdown]
# ## Rounds to the target over seeds
#
# Each seed draws its own partition, initial model and client sampling; FedSGD and FedAvg of
# the same seed share the partition, so the speed-up is a ratio within a seed. The tuning
# seed's runs at the kept rates are reused.

# %%
t0 = time.perf_counter()
curves = {
    (partition, label): [
        TUNED_CURVE[partition, label]
        if TUNE and seed == TUNING_SEED
        else train(partition, label, LR[partition, label], seed)
        for seed in SEEDS
    ]
    for partition in PARTITIONS
    for label in SETTINGS
}
RUN_SECONDS = time.perf_counter() - t0
rounds = {key: [rounds_to_target(c) for c in cs] for key, cs in curves.items()}
print(f"rounds to {TARGET:.0%} per seed {SEEDS} (None: not within the cap)")
for (partition, label), rs in rounds.items():
    lr = LR[partition, label]
    shown = ", ".join("None" if r is None else f"{r:.1f}" for r in rs)
    print(f"  {PARTITIONS[partition]:28s} {label:18s} η = {lr:<6} {shown}")


def speedups(partition, label, target=TARGET):
    """FedSGD's rounds over this setting's, per seed (None where either misses the target)."""
    out = []
    for sgd, avg in zip(curves[partition, FEDSGD], curves[partition, label], strict=True):
        a, b = rounds_to_target(sgd, target), rounds_to_target(avg, target)
        out.append(None if a is None or b is None else a / b)
    return out


print(f"runs took {RUN_SECONDS:.0f} s")

# %% [markdown]
# ## Figure 2 of the paper, for our 2NN: test accuracy against communication rounds
#
# The paper's Figure 2 (CNN) and Figure 7 (2NN) plot test accuracy against rounds with the
# target as a grey line. Here every seed's raw curve (not made monotone), each ending where
# it reached the target; the rounds axis is logarithmic, as FedSGD takes several times longer.

# %%
colors = dict(zip(SETTINGS, ["tab:red", "tab:blue", "tab:green"], strict=True))
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (partition, title) in zip(axes, PARTITIONS.items(), strict=True):
    for label in SETTINGS:
        for i, (r, a) in enumerate(curves[partition, label]):
            lr = LR[partition, label]
            ax.plot(
                r,
                a,
                color=colors[label],
                lw=1,
                alpha=0.8,
                label=f"{label}, η={lr}" if i == 0 else None,
            )
    ax.axhline(TARGET, color="grey", lw=1)
    ax.set(
        xscale="log", title=f"MNIST 2NN, {title}", xlabel="communication rounds", ylim=(0.5, 1.0)
    )
axes[0].set_ylabel("test accuracy")
axes[0].legend(loc="lower right", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Ablation: is our lower target why our speed-ups are smaller?
#
# The speed-up is a ratio of rounds at one accuracy, so it depends on where the target sits.
# If our 93% (against the paper's 97% and 99%) were what shrinks it, the ratio would grow with
# the target. From the same runs, FedSGD's rounds over FedAvg's for every target from 85% up
# to ours (mean ± std over the seeds):

# %%
lo = at_scale(small=0.5, default=0.85, paper=0.9)
targets = np.round(np.arange(lo, TARGET + 1e-9, 0.005), 3)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (partition, title) in zip(axes, PARTITIONS.items(), strict=True):
    for label in FEDAVG:
        stats = [
            MeanStd.of(v) if None not in (v := speedups(partition, label, t)) else None
            for t in targets
        ]
        xs = [t for t, m in zip(targets, stats, strict=True) if m is not None]
        ms = [m for m in stats if m is not None]
        mean = np.array([m.mean for m in ms])
        std = np.array([m.std for m in ms])
        ax.plot(xs, mean, color=colors[label], label=label)
        ax.fill_between(xs, mean - std, mean + std, color=colors[label], alpha=0.2)
    ax.axhline(1, color="grey", lw=1, ls=":")
    ax.set(title=title, xlabel="target test accuracy")
axes[0].set_ylabel("speed-up over FedSGD (rounds)")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Paper vs ours


# %%
def ours(values):
    if any(v is None for v in values):
        return f"not reached by {sum(v is None for v in values)} of {len(values)} seeds"
    return MeanStd.of(values)


SUBSET = at_scale(
    small="8,000 training / 2,000 test images of the shipped subset",
    default="8,000 training / 2,000 test images of the shipped subset",
    paper="the user's MNIST",
)
table = PaperVsOurs(
    f"Ours: {DATA.name} ({SUBSET if DATA.is_mnist else 'the 8x8 digits'}), "
    f"100 clients (IID, or 2 label-sorted shards each), C = 0.1, the 2NN (784-200-200-10, ReLU), "
    f"target {TARGET:.0%} test accuracy; rounds to the target counted as the paper does; seeds "
    f"{SEEDS}, learning rate per setting and partition "
    + (
        f"picked on seed {TUNING_SEED} from the windows above"
        if TUNE
        else "fixed (small scale: no tuning)"
    )
    + ": "
    + ", ".join(
        f"{PARTITIONS[p].split()[0]} {lbl.split(' (')[0]} η={lr}" for (p, lbl), lr in LR.items()
    )
    + ". The paper: full MNIST (600 examples a client), target 97% (2NN) / 99% (CNN)."
)
table.spec = ".3g"
PAPER = {  # (partition, label): (paper rounds, speed-up), Table 2 (CNN) and Table 1 (2NN)
    ("iid", FEDSGD): ("626 (CNN); 1474 (2NN)", None),
    ("iid", FEDAVG[0]): ("34 (CNN); 87 (2NN)", "18.4× (CNN); 16.9× (2NN, 1474/87)"),
    ("iid", FEDAVG[1]): ("20 (CNN)", "31.3× (CNN)"),
    ("shards", FEDSGD): ("483 (CNN); 1796 (2NN)", None),
    ("shards", FEDAVG[0]): ("350 (CNN); 664 (2NN)", "1.4× (CNN); 2.7× (2NN, 1796/664)"),
    ("shards", FEDAVG[1]): ("229 (CNN)", "2.1× (CNN)"),
}
SOURCE = {
    FEDSGD: "Table 2 (CNN, 99%); Table 1, C = 0.1, B = ∞ (2NN, 97%)",
    FEDAVG[0]: "Table 2 (CNN, 99%); Table 1, C = 0.1, B = 10 (2NN, 97%)",
    FEDAVG[1]: "Table 2 (CNN, 99%)",
}
NOTE_ROUNDS = {
    "iid": "fewer rounds than the paper's: a lower target (93% against 97% / 99%) on an "
    "8,000-image subset; compare our settings with each other, not with the paper's rounds",
    "shards": "as in the paper, FedAvg needs several times its IID rounds on the 2-digit "
    "split; FedSGD (a gradient over 10 clients' data) is less affected",
}
for partition in PARTITIONS:
    p = PARTITIONS[partition].split()[0]
    for label in SETTINGS:
        paper_rounds, paper_speedup = PAPER[partition, label]
        table.add(
            f"{p}: rounds to target, {label}",
            paper=paper_rounds,
            source=SOURCE[label],
            ours=ours(rounds[partition, label]),
            note=NOTE_ROUNDS[partition],
        )
    for label in FEDAVG:
        paper_rounds, paper_speedup = PAPER[partition, label]
        table.add(
            f"{p}: speed-up of {label} over FedSGD",
            paper=paper_speedup,
            source=SOURCE[label],
            ours=ours(speedups(partition, label)),
            note=(
                "3-6x smaller than the paper's; not from our lower target (over 85-93% the "
                "speed-up does not grow with it, see the ablation) but likely from less local "
                "work a round: "
                f"80 examples a client, u = {SETTINGS[label]['u']:.0f} local steps where the "
                f"paper's is {60 if label == FEDAVG[0] else 300}"
                if partition == "iid"
                else "of the paper's size, small too: averaging models trained on 2 digits "
                "each gains less a round"
            ),
        )
table  # noqa: B018

# %% [markdown]
# **Where ours differs, and why.**
#
# - *The ordering is the paper's*: FedSGD needs the most rounds, `E = 1, B = 10` fewer, and
#   `E = 5, B = 10` the fewest, on both splits, in every seed; the speed-ups are larger on IID
#   data than on the pathological non-IID split, where FedAvg needs several times the rounds it
#   needs on IID data.
# - *Our IID speed-ups are 3-6 times smaller than the paper's* (its CNN: 18.4× for
#   `E = 1, B = 10` and 31.3× for `E = 5, B = 10`; its 2NN: 16.9× for `E = 1, B = 10`). It is
#   not our lower target: over targets from 85% to 93% the ratio does not grow (the ablation:
#   it falls for `E = 5, B = 10` and stays flat for `E = 1, B = 10`). The likeliest cause is
#   the amount of local computation a round: our clients hold 80 examples, not 600, so
#   `E = 5, B = 10` is `u = 40` local steps a round where the paper's is 300 (and
#   `E = 1, B = 10` is 8 against 60); the paper's Table 2 shows the IID speed-up broadly
#   growing with `u` (3.5× at `u = 5`, 18.4× at 60, 31.3× at 300), and ours grows from
#   `u = 8` to `u = 40` too. A possible second cause: FedSGD's best rate here, 0.681, sits
#   near the edge of stability (its curves swing by tens of points; 1.0 is dropped for
#   trailing), and the best-so-far count credits its upward swings. Third, Table 2's numbers
#   are for the CNN, a different model; the 2NN's own `E`, `B` table (Table 4) could not be
#   read.
# - *Our non-IID speed-ups are of the paper's size* (its CNN: 1.4× and 2.1×; its 2NN
#   `E = 1, B = 10`: 2.7×), small for the reason the paper gives: local training on two digits
#   moves each client's model towards its own digits, and the average of such models gains
#   less a round. FedSGD, a gradient over 10 clients' data, needs somewhat more rounds on the
#   non-IID split here, with a large spread over seeds (the paper's 2NN: 1474 vs 1796; its CNN
#   fewer: 626 vs 483).
# - *Rounds, not accuracy levels*: all our rounds are far below the paper's because the target
#   is lower and our test set is 2,000 images of the subset; the rounds are comparable between
#   our settings, not with the paper's.
# - *Learning rates*: 4 values a setting on one seed, not the paper's 11-13; the kept rate is
#   inside its window for every setting (printed above).

# %%
if SCALE == "small":
    print("small scale: the claim is not checked")
else:  # the claim, checked at the default scale
    for partition in PARTITIONS:
        for label in SETTINGS:
            assert None not in rounds[partition, label], (partition, label)  # FedSGD included
        for label in FEDAVG:
            assert min(speedups(partition, label)) > 1, (partition, label)
        e1, e5 = (MeanStd.of(rounds[partition, label]).mean for label in FEDAVG)
        assert e5 < e1, (partition, e1, e5)  # more local computation, fewer rounds
    for label in FEDAVG:  # the speed-up is larger on IID data than on the non-IID split
        assert MeanStd.of(speedups("iid", label)).mean > MeanStd.of(speedups("shards", label)).mean
    # what the text says of the differences: IID speed-ups 3-6x below the paper's (Table 2 CNN
    # 18.4 and 31.3), non-IID ones within 1-4x, and the IID speed-up of E=5, B=10 falling as
    # the target rises from 85% to ours
    iid1, iid5 = (MeanStd.of(speedups("iid", label)).mean for label in FEDAVG)
    assert 18.4 / 6 < iid1 < 18.4 / 3 and 31.3 / 6 < iid5 < 31.3 / 3, (iid1, iid5)
    assert all(1 < MeanStd.of(speedups("shards", label)).mean < 4 for label in FEDAVG)
    assert MeanStd.of(speedups("iid", FEDAVG[1], 0.85)).mean > iid5
    assert MeanStd.of(speedups("iid", FEDAVG[0], 0.85)).mean > 0.8 * iid1
    print("checked: FedAvg reaches the target in fewer rounds than FedSGD in every seed, on both")
    print("splits; E=5, B=10 in fewer than E=1, B=10; the speed-up is larger on IID data")
print(f"this notebook's runs took {time.perf_counter() - START:.0f} s at scale {SCALE}")

# %% [markdown]
# ## Run time at each scale
#
# Measured on this project's 2-core machine (shared with other jobs while it ran),
# `OMP_NUM_THREADS=1`, the real MNIST subset; the last code cell prints this execution's time.
#
# - `small` (2 seeds, one rate a setting, target 70%, capped rounds; the test suite): about
#   35 s including the kernel's start.
# - `default` (3 seeds, rates tuned on the first, target 93%; the committed outputs): 1 to 5.5
#   minutes depending on the machine's load (73 s for the committed outputs on an idle machine,
#   200 and 333 s in earlier executions under load; about half of it the tuning).
# - `paper` (`PRIVFL_MNIST_DIR` naming all of MNIST, as `privfl data fetch mnist` writes it: 600
#   examples a client, the 10,000-image test set, target 97%, caps of 4,000 / 1,500 / 1,000
#   rounds): not run. Estimated from the default run: each round does 7.5 times the local work,
#   and the paper's own counts (1474 / 1796 FedSGD rounds, 87 / 664 for `E = 1, B = 10`) are
#   2-10 times ours, so roughly 1-7 hours on this machine, with its load.
