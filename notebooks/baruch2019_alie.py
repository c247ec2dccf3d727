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
# # Baruch et al. 2019: A Little Is Enough
#
# *A Little Is Enough: Circumventing Defenses For Distributed Learning* (NeurIPS 2019).
#
# **The claim.** Colluding malicious clients that send `mu - z sigma` (the benign mean shifted by
# a small multiple of the per-coordinate standard deviation, `z` from the number of clients and
# attackers) stay within the spread of honest updates, so Krum, the trimmed mean and Bulyan
# keep them, and accuracy drops (Table 2: MNIST with 20% malicious workers, e.g. Krum and
# trimmed mean lose several points; CIFAR-10 far more), while the attack is cheap and needs
# no knowledge beyond the benign statistics.
#
# **Ours.** Baruch et al.'s setting as a federation: digits, 50 IID clients, every client
# every round, one local SGD step of batch 10 (distributed SGD), 150 rounds, 20% malicious,
# `z = z_max` of the paper (0.468 for 10 of 50), and `z = 1.5` against the trimmed mean.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt

import privfl

SMALL = os.environ.get("PRIVFL_NOTEBOOK_SMALL") == "1"  # the tests' shrunken size
EXAMPLES = Path.cwd().parent / "examples"
def size(full, small):
    return small if SMALL else full


# %%
ROUNDS = size(150, 3)
RULES = {
    "mean (FedAvg)": None,
    "krum": {"rule": "krum"},
    "trimmed_mean": {"rule": "trimmed_mean", "trim": 0.2},
    "median": {"rule": "median"},
}


def config(rule, z=False):
    attack = {"method": "alie", "fraction": 0.2, "clean_twin": False}
    if z not in (False, None):
        attack["z"] = z
    return privfl.Config(
        name="alie",
        data={"name": "digits", "partition": "iid", "clients": 50},
        model={"name": "mlp", "hidden": [64]},
        federation={
            "rounds": ROUNDS,
            "clients_per_round": 50,
            "local_steps": 1,
            "batch_size": 10,
            "lr": 0.1,
        },
        evaluation={"every": size(50, 1)},
        defense={"robust": rule} if rule else {},
        attack={"poisoning": attack} if z is not False else {},
    )


acc = {}
for name, rule in RULES.items():
    for z in (False, None):  # False: no attack; None: ALIE at z_max
        acc[name, z] = privfl.run(config(rule, z), out=None, progress=False).final_accuracy
    print(
        f"{name:14s} clean {acc[name, False]:.3f}   under ALIE {acc[name, None]:.3f}   "
        f"drop {acc[name, False] - acc[name, None]:+.3f}"
    )
acc["trimmed_mean", 1.5] = privfl.run(
    config(RULES["trimmed_mean"], 1.5), out=None, progress=False
).final_accuracy
print(f"trimmed_mean under ALIE with z = 1.5: {acc['trimmed_mean', 1.5]:.3f}")

# %%
names = list(RULES)
x = range(len(names))
plt.figure(figsize=(6, 3.2))
plt.bar([i - 0.2 for i in x], [acc[n, False] for n in names], 0.4, label="no attack")
plt.bar([i + 0.2 for i in x], [acc[n, None] for n in names], 0.4, label="ALIE, 20%")
plt.xticks(list(x), names)
plt.ylabel("final test accuracy")
plt.legend()
plt.show()

# %% [markdown]
# **Where ours differs, and why.** This is the setting of the project's slow poisoning
# test (`tests/attacks/poisoning/test_poisoning_qualitative.py`), which measured ALIE taking
# Krum from 0.897 to 0.816 and the trimmed mean from 0.903 to 0.889 at `z_max` and to 0.819 at
# `z = 1.5`: the paper's direction (Krum, which keeps one update, falls most; the
# coordinate-wise rules need a larger `z`), with smaller drops than the paper's MNIST table
# because digits with a 4,810-parameter MLP is an easy, well-separated task and 150 rounds of
# one step stop far from convergence; the paper also trains with momentum and several seeds.
# The full-size run of this notebook (9 runs of 150 rounds of 50 clients) did not finish
# within 15 minutes on the shared machine when these notes were written, so its mean and
# median rows are not quoted here; the check below asserts the test's two figures. A shorter
# trial (20 clients, 40 rounds, learning rate 0.5) showed no drop at all: ALIE's `z_max` is
# small for 20 clients, and the attack needs the paper's many-client setting.

# %%
if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: ALIE gets past Krum, and past the trimmed mean at z = 1.5
    assert acc["krum", False] - acc["krum", None] >= 0.04
    assert acc["trimmed_mean", False] - acc["trimmed_mean", 1.5] >= 0.04
    print("checked")
