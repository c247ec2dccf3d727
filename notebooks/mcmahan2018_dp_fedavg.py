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
# # McMahan et al. 2018: DP-FedAvg, accuracy against epsilon
#
# *Learning Differentially Private Recurrent Language Models* (ICLR 2018).
#
# **The claim.** User-level differential privacy (each user's whole data protected) costs little
# accuracy when the population is large: DP-FedAvg (clients Poisson-sampled, updates clipped,
# Gaussian noise on the sum, moments accountant) trains an LSTM language model on 763,430 users
# to nearly the non-private accuracy at (4.6, 1e-9)-DP with about 5,000 users a round
# (Table 1 / Figure 3); with few users a round the noise dominates and accuracy falls.
#
# **Ours.** Digits with 100 users (IID, about 14 images each), 30 expected a round, 15 rounds,
# DP-FedAvg (`defense.dp.mode = "central"`) calibrated to each target epsilon at delta 1e-5,
# against the same run without DP.

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
ROUNDS = size(15, 2)
EPSILONS = [1.0, 4.0, 16.0, 64.0] if not SMALL else [4.0]
def config(dp):
    return privfl.Config(
        name="dpfedavg",
        data={"name": "digits", "partition": "iid", "clients": 100},
        model={"name": "mlp", "hidden": [32]},
        federation={"rounds": ROUNDS, "clients_per_round": 30, "local_epochs": 1,
                    "batch_size": 8, "lr": 0.5},
        defense={"dp": dp} if dp else {},
    )
plain = privfl.run(config(None), out=None, progress=False).final_accuracy
points = []
for eps in EPSILONS:
    r = privfl.run(config({"mode": "central", "target_epsilon": eps, "clip": 1.0}), out=None,
                   progress=False)
    points.append((r.ledger.epsilon(), r.final_accuracy))
    print(f"target epsilon {eps:5g}: spent {points[-1][0]:.2f}, accuracy {r.final_accuracy:.3f}")
print(f"without DP: accuracy {plain:.3f}")

# %%
plt.figure(figsize=(5, 3.2))
plt.semilogx(*zip(*points, strict=True), marker="o", label="DP-FedAvg")
plt.axhline(plain, ls="--", color="grey", label="no DP")
plt.xlabel("epsilon (delta = 1e-5)")
plt.ylabel("final test accuracy")
plt.legend()
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# **Where ours differs, and why.** The shape is the paper's: accuracy rises with epsilon
# toward the non-private run. Measured at the full size here (one seed): 0.32 at epsilon 1,
# 0.80 at 4, 0.82 at 16 and 64, against 0.87 without DP. Two differences in level. With 30
# users a round the noise on the average is `sigma x clip / 30` per coordinate, against
# `sigma x clip / 5000` in the paper, so at small epsilon our model barely learns where the
# paper's loses almost nothing (the paper's own point: DP-FedAvg needs large cohorts). And a
# gap of about 5 points stays even at epsilon 64, where the noise is negligible: it comes from
# clipping every update to norm 1 and weighting users equally (DP-FedAvg's estimator), not from
# the noise. Also: delta is 1e-5 (the paper's 1e-9 suits its 763k users; ours has 100), the
# accountant is Opacus' RDP with the Balle et al. 2020 conversion (tighter than the moments
# accountant the paper used), and the model is an MLP on digits, not an LSTM on Reddit posts.

# %%
if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: accuracy rises with epsilon toward the non-private run
    accs = [a for _, a in points]
    assert accs[-1] > accs[0] + 0.2 and accs[-1] <= plain + 0.02
    print("checked")
