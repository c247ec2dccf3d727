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
# # Geiping et al. 2020: Inverting Gradients
#
# *Inverting Gradients - How easy is it to break privacy in federated learning?*
# (NeurIPS 2020).
#
# **The claim.** Matching the *direction* of the gradient (cosine distance) with a total-variation
# prior, optimized with Adam on signed gradients, reconstructs images where L2 matching (DLG)
# fails, and it does so even from a FedAvg update of several local steps when the attacker
# replays the local training (Section 4, Figure 5 / Table 2: recognizable CIFAR images from
# updates of 1-5 local steps).
#
# **Ours.** `examples/inversion.toml` with 5 local SGD steps per client: iDLG (reads the update
# as one gradient) against IG (replays the 5 steps on its candidate images), two clients each.

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
STEPS = 5
runs = {"idlg": [], "ig": [f"attack.inversion.iterations={size(1000, 30)}"]}
records = {}
for method, extra in runs.items():
    sets = [f"attack.inversion.method={method}", "attack.inversion.max_targets=2",
            f"federation.local_steps={STEPS}", *extra]
    if SMALL and method == "idlg":
        sets.append("attack.inversion.iterations=20")
    result = privfl.run(privfl.load_config(EXAMPLES / "inversion.toml", sets), out=None,
                        progress=False)
    records[method] = result.attacks
    print(f"{method:5s} PSNR {[round(r['psnr'], 1) for r in result.attacks]} dB, "
          f"SSIM {[round(r['ssim'], 3) for r in result.attacks]}")

# %%
plt.figure(figsize=(4, 3))
plt.bar(list(records), [sum(r["psnr"] for r in v) / len(v) for v in records.values()])
plt.ylabel("mean PSNR (dB)")
plt.title(f"{STEPS} local steps")
plt.show()

# %% [markdown]
# **Where ours differs, and why.** As in the paper, treating a multi-step update as one
# gradient fails while IG, which replays the local steps, recovers the digits: at the full size
# here (two digits, one seed) iDLG reaches 3.8 and 4.7 dB (SSIM 0.11 and 0.20), IG 38.8 and
# 34.2 dB (SSIM 0.999 and 0.998). Our images are 8x8 digits through DLG's small sigmoid
# LeNet rather than CIFAR-10 through a ResNet, so IG needs 1,000 iterations instead of 24,000
# and one restart; the TV weight is the paper's 1e-4 (natural 32x32 `patches` need about
# 1e-2). At the notebooks' test size (30 iterations) IG has not converged and the gap is
# small: that run is a smoke test, not the result.

# %%
if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: replaying the local steps beats reading one gradient
    mean = {m: sum(r["psnr"] for r in v) / len(v) for m, v in records.items()}
    assert mean["ig"] > mean["idlg"] + 10
    print("checked")
