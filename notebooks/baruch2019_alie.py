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
# # Baruch, Baruch and Goldberg 2019: A Little Is Enough
#
# *A Little Is Enough: Circumventing Defenses For Distributed Learning*, NeurIPS 2019
# ([arXiv:1902.06156](https://arxiv.org/abs/1902.06156); authors' code:
# [moranant/attacking_distributed_learning](https://github.com/moranant/attacking_distributed_learning)).
#
# **The claim.** Colluding workers that all send the benign mean moved by a small multiple `z`
# of the per-coordinate standard deviation stay inside the spread of the honest updates, so
# the robust aggregation rules (trimmed mean, Krum, Bulyan) keep them, and training is
# derailed. In the paper's words (the quotes are copied from the stored copies of the two
# abstracts):
#
# - arXiv v1 abstract: *"We show that 20% of corrupt workers are sufficient to degrade a
#   CIFAR10 model accuracy by 50%"*;
# - NeurIPS 2019 abstract: *"We show that less than 25% of colluding workers are sufficient
#   to degrade the accuracy of models trained on MNIST, CIFAR10 and CIFAR100 by 50%"*.
#
# **What we could not verify.** The paper's per-defense results table (accuracy under attack
# with no defense, trimmed mean, Krum and Bulyan on MNIST and CIFAR-10) and its `z_max`
# values could not be read: the stored copies of the paper reachable from this project
# (arXiv abstract page, ar5iv, the NeurIPS proceedings metadata) hold the abstract and the
# introduction only. We therefore quote no table number; the table below says "not verified"
# where the paper's per-defense number belongs, and compares with the abstract's 50%.
#
# **Settings taken from the authors' code** (read in the repository above, not from memory):
# the MNIST model is `MnistNet` in `data_sets.py`, a multilayer perceptron 784-100-10 (ReLU);
# `main.py`'s defaults are 51 users, `mal_prop = 0.24`, `num_std` (`z`) `= 1.5`, learning rate
# 0.1 with momentum 0.9 applied by the server, batch 128, 300 rounds (`epochs`), defenses
# `NoDefense`, `TrimmedMean`, `Krum`, `Bulyan`; every worker sends the gradient of one
# mini-batch each round (synchronous SGD); the attackers compute the mean and standard
# deviation of *their own* gradients (`malicious.py`, no knowledge of the honest ones), and
# every attacker sends `mean - num_std * std` of the *gradients*.

# %% [markdown]
# ## Our setting
#
# Real MNIST (the shipped 10,000-digit subset: 8,000 train, 2,000 test) when
# `PRIVFL_MNIST_DIR` points at it, otherwise the bundled 8x8 digits. The paper's synchronous
# SGD as a federation: `n = 50` IID clients, all of them every round, one local step on a
# mini-batch of 128, client learning rate 0.1 and server momentum 0.9 (`fedavgm`, server
# learning rate 1: the server applies `v <- 0.9 v + mean of the -0.1 x gradients`, the
# authors' update), the 784-100-10 MLP.
#
# **Attackers and `f`.** `m = 10` of the 50 clients (20%, the arXiv abstract's share) run
# ALIE with partial knowledge (mean and std of their own 10 updates, as in the authors'
# code). Every robust rule is told the true `f = m = 10`: Krum needs `n >= 2f + 3 = 23`,
# Bulyan `n >= 4f + 3 = 43`, both hold for 50. The authors' default share, 24% (`m = 12`),
# would need `n >= 51` for Bulyan with `f = m` (the authors' 51 users); we keep
# `n = 50` and 20% so that Bulyan runs with the honest `f`. The trimmed mean cuts 20% (10
# values) at each end of every coordinate.
#
# **`z`.** `z_max` of the paper for `n = 50`, `m = 10` (the next cell checks privfl's formula),
# in the direction of the authors' code (see the sign check below).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm

import privfl
from privfl.attacks.poisoning.a_little_is_enough import alie_z_max
from privfl.reproduce import MeanStd, PaperVsOurs, at_scale, current_scale, mnist_or_digits

START = time.perf_counter()
SCALE = current_scale()
N, FRACTION = 50, 0.2
M = int(FRACTION * N + 0.5)  # privfl's malicious_count: 10 of 50
ROUNDS = at_scale(small=3, default=55, paper=300)
EVERY = at_scale(small=3, default=5, paper=10)
SEEDS = at_scale(small=[0, 1], default=[0, 1, 2], paper=[0, 1, 2, 3, 4])
DATA = mnist_or_digits(partition="iid", clients=N)
print(DATA.note)
print(f"scale {SCALE}: n = {N}, m = {M}, {ROUNDS} rounds, seeds {SEEDS}")

# %% [markdown]
# ## privfl's `z_max` against Algorithm 3 of the paper
#
# privfl's `alie_z_max(n, m)` computes `s = floor(n/2 + 1) - m` (the "supporters" the
# attackers need) and `z_max = Phi^-1((n - s) / n)`. Its docstring cites Algorithm 3, lines
# 1-2; we could not read that algorithm in a stored copy of the paper, so we cannot confirm
# it. Two facts we could check: the authors' code never computes `z_max` (it takes `z` as the
# argument `num_std`, default 1.5), and widely used re-implementations (e.g.
# `epfml/byzantine-robust-noniid-optimizer`, `codes/attacks/alittle.py`) use
# `Phi^-1((n - m - s) / (n - m))`, the share of the *benign* workers, which gives a smaller
# `z`. The cell prints both; we run privfl's.

# %%
s = int(np.floor(N / 2 + 1)) - M
z_privfl = alie_z_max(N, M)
z_benign_share = float(norm.ppf((N - M - s) / (N - M)))
assert abs(z_privfl - norm.ppf((N - s) / N)) < 1e-12
print(f"n = {N}, m = {M}: s = {s} supporters")
print(f"privfl     z_max = Phi^-1((n - s)/n)         = Phi^-1({N - s}/{N}) = {z_privfl:.3f}")
print(
    "epfml etc. z_max = Phi^-1((n - m - s)/(n - m)) = "
    f"Phi^-1({N - M - s}/{N - M}) = {z_benign_share:.3f}"
)

# %% [markdown]
# ## The sign
#
# The authors' `DriftAttack` (`malicious.py`) sends `mu - z sigma` of the **gradients**, which
# the server applies as `-lr x gradient`: in update space (`delta = -lr x gradient`) that is
# `mu + z sigma` of the updates, which is what privfl's `a_little_is_enough` sends (a test
# checks the two agree). The two signs are not equivalent on a ReLU network: the authors'
# direction keeps moving every weight the way the benign clients move it, past the mean; the
# opposite one holds training back. We run the authors' direction (`z = +z_max`) and the
# opposite one (`z = -z_max`) as an ablation at the end.

# %%
RULES = {
    "no defense (mean)": None,
    "trimmed mean": {"rule": "trimmed_mean", "trim": 0.2},
    "Krum": {"rule": "krum", "f": M},
    "Bulyan": {"rule": "bulyan", "f": M},
}
Z_PAPER = z_privfl  # the authors' direction: mean - z std of the gradients


def config(rule, seed, z=None):
    """One run: ``z`` None is the clean run, otherwise ALIE with privfl's z = ``z``."""
    attack = {}
    if z is not None:
        attack = {
            "poisoning": {
                "method": "alie",
                "fraction": FRACTION,
                "z": z,
                "knowledge": "partial",
                "clean_twin": False,
            }
        }
    return privfl.Config(
        name="alie",
        seed=seed,
        data=DATA.section,
        model={"name": "mlp", "hidden": [100]},
        federation={
            "rounds": ROUNDS,
            "clients_per_round": N,
            "local_steps": 1,
            "batch_size": 128,
            "lr": 0.1,
            "server_optimizer": "fedavgm",
            "server_momentum": 0.9,
            "engine": "vectorized",
        },
        evaluation={"every": EVERY},
        defense={"robust": RULES[rule]} if RULES[rule] else {},
        attack=attack,
    )


def curve(rule, seed, z=None):
    """(rounds, test accuracies) of one run."""
    result = privfl.run(config(rule, seed, z), out=None, progress=False)
    points = [(m["round"], m["test_accuracy"]) for m in result.metrics]
    points = [(r, a) for r, a in points if a is not None]
    return np.array([r for r, _ in points]), np.array([a for _, a in points])


curves = {}
timer = time.perf_counter()
for rule in RULES:
    for attacked in (False, True):
        for seed in SEEDS:
            curves[rule, attacked, seed] = curve(rule, seed, Z_PAPER if attacked else None)
    final = {a: MeanStd.of(curves[rule, a, s][1][-1] for s in SEEDS) for a in (False, True)}
    print(
        f"{rule:18s} clean {final[False].format('.3f')}   "
        f"ALIE {final[True].format('.3f')}   ({time.perf_counter() - timer:.0f} s so far)"
    )
RUNS_SECONDS = time.perf_counter() - timer

# %% [markdown]
# ## Accuracy under attack per aggregator
#
# Left: test accuracy after the last round, mean and std over the seeds, without and with
# ALIE. Right: accuracy against rounds (mean over seeds; thin lines: each seed).

# %%
names = list(RULES)
final_acc = {
    (r, a): MeanStd.of(curves[r, a, s][1][-1] for s in SEEDS) for r in names for a in (False, True)
}
fig, (bar, lines) = plt.subplots(1, 2, figsize=(11, 3.6))
x = np.arange(len(names))
for off, attacked, label in ((-0.2, False, "no attack"), (0.2, True, f"ALIE, m = {M} of {N}")):
    bar.bar(
        x + off,
        [final_acc[n, attacked].mean for n in names],
        0.4,
        yerr=[final_acc[n, attacked].std for n in names],
        capsize=3,
        label=label,
    )
bar.set_xticks(x, names, fontsize=8)
bar.set_ylabel(f"test accuracy after {ROUNDS} rounds")
bar.set_ylim(0, 1.15)
bar.legend(fontsize=8, ncol=2, loc="upper center")
for i, rule in enumerate(names):
    color = f"C{i}"
    for attacked, style in ((False, ":"), (True, "-")):
        rounds = curves[rule, attacked, SEEDS[0]][0]
        accs = np.stack([curves[rule, attacked, s][1] for s in SEEDS])
        lines.plot(
            rounds, accs.mean(0), style, color=color, label=f"{rule}{', ALIE' if attacked else ''}"
        )
        if attacked:
            for a in accs:
                lines.plot(rounds, a, "-", color=color, alpha=0.25, lw=0.8)
lines.set_xlabel("round")
lines.set_ylabel("test accuracy")
lines.set_ylim(0, 1)
lines.legend(fontsize=6, ncol=2)
fig.suptitle(f"ALIE (z = {z_privfl:.3f}, authors' direction) on {DATA.name}, n = {N}", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Paper vs ours

# %%
SUBSET = "the 10,000-digit MNIST subset" if DATA.is_mnist else "bundled 8x8 digits"
table = PaperVsOurs(
    f"Ours: {DATA.name} ({SUBSET}), "
    f"MLP 784-100-10 (the authors' MnistNet), n = {N} IID clients every round, one SGD step of "
    f"batch 128, lr 0.1, server momentum 0.9, {ROUNDS} rounds, m = {M} attackers (partial "
    f"knowledge), z = z_max = {z_privfl:.3f} in the authors' direction, f = {M} for Krum and "
    f"Bulyan, trim 20%; accuracy after the last round, {len(SEEDS)} seeds (scale {SCALE})."
)
abstract = "accuracy degraded by 50% with < 25% colluders"
source = "NeurIPS 2019 abstract; per-defense table not verified"
for rule in names:
    clean, hit = final_acc[rule, False], final_acc[rule, True]
    drop = 1 - hit.mean / clean.mean
    table.add(
        f"MNIST accuracy under ALIE, {rule}",
        paper=abstract,
        source=source,
        ours=hit,
        note=f"clean {clean.format('.3f')}: a {100 * drop:.0f}% relative drop. "
        + {
            "no defense (mean)": "The mean only moves by m/n x z sigma a round (0.09 sigma "
            "here); the attack needs a robust rule to amplify it. An exploratory 100-round "
            "run (seed 0) was still at 0.907.",
            "trimmed mean": f"The trimmed mean keeps the attackers, but {ROUNDS} rounds were "
            "not enough to derail it; an exploratory 100-round run (seed 0) fell to 0.33 at round "
            "90, so the drop depends on the horizon (the authors ran 300 rounds).",
            "Krum": "Krum picks one of the 10 identical attacker updates every round once "
            "they win (distance 0 to each other), as the paper explains.",
            "Bulyan": "Bulyan's recursive Krum also selects the attackers; the accuracy "
            "oscillates (collapse and partial recovery), hence the spread.",
        }[rule],
    )
table.add(
    "CIFAR10 accuracy under ALIE",
    paper="degraded by 50% with 20% corrupt workers",
    source="arXiv v1 abstract",
    ours="not run",
    note="CIFAR-10 is not shipped with the project; no stand-in is presented as a match.",
)
table.add(
    "z_max, n = 50",
    paper="not verified (Algorithm 3 unreadable here)",
    source="-",
    ours=f"{z_privfl:.3f} for m = {M} (privfl); {z_benign_share:.3f} with (n-m-s)/(n-m)",
    note="The authors' code takes z as an argument (default 1.5) and computes no z_max.",
)
table  # noqa: B018 (Jupyter shows the table)

# %% [markdown]
# ## Ablation: the opposite sign
#
# The same attack in the opposite direction (`z = -z_max`: `mu - z sigma` of the updates),
# one seed, Krum and Bulyan (the two rules the authors' direction breaks fastest).

# %%
ablation = {}
for rule in ("Krum", "Bulyan"):
    ablation[rule] = curve(rule, SEEDS[0], -z_privfl)[1][-1]
    print(
        f"{rule:7s} seed {SEEDS[0]}: clean {curves[rule, False, SEEDS[0]][1][-1]:.3f}   "
        f"ALIE authors' sign {curves[rule, True, SEEDS[0]][1][-1]:.3f}   "
        f"ALIE opposite sign {ablation[rule]:.3f}"
    )
TOTAL_SECONDS = time.perf_counter() - START
print(f"runs {RUNS_SECONDS:.0f} s, notebook {TOTAL_SECONDS:.0f} s at scale {SCALE}")

# %% [markdown]
# ## Where ours differs, and why
#
# - **Numbers of the paper.** Only the abstracts' 50% could be checked; the per-defense
#   MNIST and CIFAR-10 numbers and the `z_max` values of the paper's table are not quoted
#   because we could not read them (see the top). A reader with the PDF should add them to the
#   table.
# - **Data and length.** A 10,000-digit MNIST subset and a short horizon instead of full MNIST
#   and the authors' 300 rounds: the attacked runs are unstable (collapse, partial recovery),
#   so the accuracy after a fixed round has a large spread across seeds, and a rule that still
#   holds at our last round (the trimmed mean) can fall later.
# - **The metric.** We report the accuracy after the last round; the authors' code prints the
#   maximal accuracy over training (`main.py`), which an attack that derails training late
#   would not lower.
# - **The sign.** The attack hurts only in the authors' direction; the opposite direction
#   leaves Krum and Bulyan at (or above) their clean accuracy (ablation above).
# - **`z_max`.** privfl's formula gives 0.468 for `n = 50`, `m = 10`; the benign-share
#   formula gives 0.253. Neither could be checked against the paper's equation.
#
# **Run time on this machine** (2 CPU cores shared with other jobs, `OMP_NUM_THREADS=1`; the
# last line of the ablation cell prints the time of the run you are reading): small scale (3
# rounds, 2 seeds, for the tests) about 35 s; default scale (55 rounds, 3 seeds: 24 runs of 50
# clients plus 2 ablation runs, vectorized engine) 85 s for the committed run on an idle
# machine (364 s in an earlier execution at load average 3-5 from other jobs); paper scale (300
# rounds, 5 seeds) scales with rounds x seeds, about 9 x the default, 15 minutes to an hour, on
# full MNIST (`privfl data fetch mnist`, then `PRIVFL_MNIST_DIR` pointing at it: one
# mini-batch a client a round, so the larger training set does not add time).

# %%
if SCALE == "small":
    print("small scale: the claim is not checked")
else:
    # The claim, checked where it holds in our setting: ALIE in the authors' direction takes
    # Krum and Bulyan well below their clean accuracy; the opposite sign does not.
    for rule in ("Krum", "Bulyan"):
        assert final_acc[rule, True].mean < final_acc[rule, False].mean - 0.1, rule
        assert ablation[rule] > curves[rule, True, SEEDS[0]][1][-1], rule
    print("checked")
