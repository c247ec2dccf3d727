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
# # McMahan et al. 2017: FedAvg, IID vs non-IID, and the effect of E and B
#
# *Communication-Efficient Learning of Deep Networks from Decentralized Data* (AISTATS 2017).
#
# **The claim.** Federated Averaging (clients run `E` local epochs of minibatch `B` before the
# server averages) needs far fewer communication rounds than FedSGD (`E = 1`, `B = full`, one
# gradient step a round) to reach a target accuracy, both on IID data and on the pathological
# non-IID split where each client holds two classes (100 clients, 2 shards each); more local
# computation (larger `E`, smaller `B`) cuts rounds further (Table 2, Figure 2: MNIST CNN, e.g.
# 99% reached in 1,181 rounds by FedSGD against 20 (IID) and 173 (non-IID) with `E = 5, B = 10`).
#
# **Ours.** The bundled 8x8 digits (1,438 training images) instead of MNIST, 100 clients of
# about 14 images (IID or 2 shards each), 10 a round (`C = 0.1`), an MLP with one hidden layer of
# 64, learning rate 0.1, and the number of rounds each setting needs to reach 80% test accuracy.

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
ROUNDS = size(30, 3)
TARGET = 0.80
SETTINGS = {  # label: (local_epochs, batch_size)
    "FedSGD (E=1, B=full)": (1, "full"),
    "FedAvg E=1, B=10": (1, 10),
    "FedAvg E=5, B=10": (5, 10),
}
curves = {}
for partition in ("iid", "shards"):
    for label, (epochs, batch) in SETTINGS.items():
        cfg = privfl.Config(
            name="fedavg",
            data={"name": "digits", "partition": partition, "clients": 100},
            model={"name": "mlp", "hidden": [64]},
            federation={"rounds": ROUNDS, "clients_per_round": 10, "local_epochs": epochs,
                        "batch_size": batch, "lr": 0.1},
        )
        result = privfl.run(cfg, out=None, progress=False)
        curves[partition, label] = [m["test_accuracy"] for m in result.metrics]


# %%
def rounds_to(acc, target=TARGET):
    return next((i + 1 for i, a in enumerate(acc) if a >= target), None)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, partition in zip(axes, ("iid", "shards"), strict=True):
    for label in SETTINGS:
        ax.plot(range(1, ROUNDS + 1), curves[partition, label], label=label)
    ax.axhline(TARGET, ls="--", color="grey", lw=1)
    ax.set(title=f"{partition} partition", xlabel="round", ylabel="test accuracy")
axes[0].legend()
plt.show()
print(f"rounds to {TARGET:.0%} (None: not within {ROUNDS} rounds)")
for (partition, label), acc in curves.items():
    print(f"  {partition:6s} {label:22s} {rounds_to(acc)!s:>5}   final {acc[-1]:.3f}")

# %% [markdown]
# **Where ours differs, and why.** The ordering is the paper's: FedSGD is slowest and
# `E = 5, B = 10` fastest on both splits, and the non-IID split needs more rounds. Measured at
# the full size here (30 rounds, one seed): `E = 5, B = 10` reaches 80% in 10 rounds (IID) and
# 19 rounds (2 classes a client), ending at 0.93 and 0.79; `E = 1, B = 10` ends at 0.76 and 0.68
# and FedSGD at 0.59 and 0.54, neither reaching 80% within 30 rounds. The gaps are smaller than
# the paper's 10-100x speed-ups because the task is much smaller (a 4,810-parameter MLP on 8x8
# images, 14 images a client, so `E = 5, B = 10` is only 10 local steps a round), we count
# rounds to 80% rather than 99%, and one `lr = 0.1` serves every setting where the paper tuned
# it per setting.

# %%
if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: more local computation needs fewer rounds, on both splits
    for partition in ("iid", "shards"):
        fast = curves[partition, "FedAvg E=5, B=10"]
        assert rounds_to(fast) is not None
        assert fast[-1] > curves[partition, "FedSGD (E=1, B=full)"][-1] + 0.1
    iid, shards = (rounds_to(curves[p, "FedAvg E=5, B=10"]) for p in ("iid", "shards"))
    assert iid < shards
    print("checked")
