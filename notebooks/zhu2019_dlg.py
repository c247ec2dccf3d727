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
# # Zhu et al. 2019: Deep Leakage from Gradients, and the noise defense
#
# *Deep Leakage from Gradients* (NeurIPS 2019).
#
# **The claim.** From the gradient of one training image through an untrained LeNet with sigmoid
# activations, a server that optimizes dummy data and labels so that their gradient matches
# (L2, L-BFGS) recovers the image pixel-wise (Figure 3, MNIST/CIFAR/SVHN/LFW). Adding Gaussian
# noise to the shared gradient defends: with variance at or above 1e-2 the reconstruction fails,
# below 1e-4 it is not affected (Figure 4a).
#
# **Ours.** `examples/inversion.toml`: DLG's LeNet on the 8x8 digits, one digit per client, one
# local SGD step (so the update is `-lr x gradient`), DLG on two clients of round 1. The noise
# defense is local DP (`defense.dp.mode = "local"`): each update is clipped to norm 1 and noised
# with std `sigma` on the client; the gradient the server reads off the update then carries
# noise of std `sigma / lr`.

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
ITERATIONS = size(300, 20)
SIGMAS = [0.0, 1e-4, 1e-3, 1e-2] if not SMALL else [0.0, 1e-2]
base = ["attack.inversion.method=dlg", "attack.inversion.max_targets=2",
        f"attack.inversion.iterations={ITERATIONS}"]
psnr = {}
for sigma in SIGMAS:
    sets = base if sigma == 0 else base + [
        "defense.dp.mode=local", f"defense.dp.noise_multiplier={sigma}", "defense.dp.clip=1.0"]
    result = privfl.run(privfl.load_config(EXAMPLES / "inversion.toml", sets), out=None,
                        progress=False)
    psnr[sigma] = [r["psnr"] for r in result.attacks]
    lr = result.config.federation.lr
    print(f"update noise std {sigma:g} (gradient noise std {sigma / lr:g}): "
          f"PSNR {[round(p, 1) for p in psnr[sigma]]} dB, "
          f"labels {[r['label_accuracy'] for r in result.attacks]}")

# %%
xs = [max(s / 0.1, 1e-6) for s in SIGMAS]
plt.figure(figsize=(5, 3.2))
plt.semilogx(xs, [sum(p) / len(p) for p in psnr.values()], marker="o")
plt.xlabel("std of the noise on the gradient (1e-6 = none)")
plt.ylabel("mean PSNR of DLG (dB)")
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# **Where ours differs, and why.** Without noise DLG recovers the digits almost exactly, as
# in Figure 3: at the full size here (one seed, two digits) PSNR is 78-81 dB and every label
# is right. Noise on the gradient of std 1e-3 (variance 1e-6) brings it to 37 dB, std 1e-2
# (variance 1e-4) to 18 dB, and std 1e-1 (variance 1e-2, the paper's threshold) to 4 dB: noise.
# So the paper's threshold holds, but our reconstructions degrade at smaller noise than the
# paper reports (it saw leakage at variance 1e-4 still succeed). Reasons: we measure PSNR,
# which falls long before an image stops being recognizable, where the paper judges images
# and the matching loss; the images are 8x8 digits rather than 28x28 or 32x32; and the noise
# is added to the *update* after clipping it to norm 1 (local DP, what a privfl client can
# do), so the x axis is the equivalent gradient noise std `sigma / lr`. The inversion suite
# (`privfl bench benchmarks/suites/inversion.toml`) runs the same grid with every method.

# %%
if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: near-exact without noise, destroyed at variance 1e-2
    assert min(psnr[0.0]) > 60 and max(psnr[SIGMAS[-1]]) < 10
    print("checked")
