"""Write the paper notebooks (``notebooks/*.ipynb``) from the cell sources below, outputs
cleared. Edit here, then run ``.venv/bin/python notebooks/build_notebooks.py``; a test checks
the committed notebooks equal what this script writes.

Every notebook uses the public API only (``privfl.Config``, ``privfl.load_config``,
``privfl.run`` and the run's result) and reads ``PRIVFL_NOTEBOOK_SMALL=1`` (the tests set
it) to shrink rounds and grids so that it executes in seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
from pathlib import Path

import matplotlib.pyplot as plt

import privfl

SMALL = os.environ.get("PRIVFL_NOTEBOOK_SMALL") == "1"  # the tests' shrunken size
EXAMPLES = Path.cwd().parent / "examples"
def size(full, small):
    return small if SMALL else full"""


def _nb(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of ``(kind, source)`` cells, kind ``"md"`` or ``"code"``, outputs empty."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(cells):
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell.id = f"cell-{i}"  # fixed ids: the written files do not change between builds
        nb.cells.append(cell)
    return nb


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["mcmahan2017_fedavg"] = [
    (
        "md",
        """# McMahan et al. 2017: FedAvg, IID vs non-IID, and the effect of E and B

*Communication-Efficient Learning of Deep Networks from Decentralized Data* (AISTATS 2017).

**The claim.** Federated Averaging (clients run `E` local epochs of minibatch `B` before the
server averages) needs far fewer communication rounds than FedSGD (`E = 1`, `B = full`, one
gradient step a round) to reach a target accuracy, both on IID data and on the pathological
non-IID split where each client holds two classes (100 clients, 2 shards each); more local
computation (larger `E`, smaller `B`) cuts rounds further (Table 2, Figure 2: MNIST CNN, e.g.
99% reached in 1,181 rounds by FedSGD against 20 (IID) and 173 (non-IID) with `E = 5, B = 10`).

**Ours.** The bundled 8x8 digits (1,438 training images) instead of MNIST, 100 clients of
about 14 images (IID or 2 shards each), 10 a round (`C = 0.1`), an MLP with one hidden layer of
64, learning rate 0.1, and the number of rounds each setting needs to reach 80% test accuracy.""",
    ),
    ("code", SETUP),
    (
        "code",
        """ROUNDS = size(30, 3)
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
        curves[partition, label] = [m["test_accuracy"] for m in result.metrics]""",
    ),
    (
        "code",
        """def rounds_to(acc, target=TARGET):
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
    print(f"  {partition:6s} {label:22s} {rounds_to(acc)!s:>5}   final {acc[-1]:.3f}")""",
    ),
    (
        "md",
        """**Where ours differs, and why.** The ordering is the paper's: FedSGD is slowest and
`E = 5, B = 10` fastest on both splits, and the non-IID split needs more rounds. Measured at
the full size here (30 rounds, one seed): `E = 5, B = 10` reaches 80% in 10 rounds (IID) and
19 rounds (2 classes a client), ending at 0.93 and 0.79; `E = 1, B = 10` ends at 0.76 and 0.68
and FedSGD at 0.59 and 0.54, neither reaching 80% within 30 rounds. The gaps are smaller than
the paper's 10-100x speed-ups because the task is much smaller (a 4,810-parameter MLP on 8x8
images, 14 images a client, so `E = 5, B = 10` is only 10 local steps a round), we count
rounds to 80% rather than 99%, and one `lr = 0.1` serves every setting where the paper tuned
it per setting.""",
    ),
    (
        "code",
        """if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: more local computation needs fewer rounds, on both splits
    for partition in ("iid", "shards"):
        fast = curves[partition, "FedAvg E=5, B=10"]
        assert rounds_to(fast) is not None
        assert fast[-1] > curves[partition, "FedSGD (E=1, B=full)"][-1] + 0.1
    iid, shards = (rounds_to(curves[p, "FedAvg E=5, B=10"]) for p in ("iid", "shards"))
    assert iid < shards
    print("checked")""",
    ),
]

NOTEBOOKS["zhu2019_dlg"] = [
    (
        "md",
        """# Zhu et al. 2019: Deep Leakage from Gradients, and the noise defense

*Deep Leakage from Gradients* (NeurIPS 2019).

**The claim.** From the gradient of one training image through an untrained LeNet with sigmoid
activations, a server that optimizes dummy data and labels so that their gradient matches
(L2, L-BFGS) recovers the image pixel-wise (Figure 3, MNIST/CIFAR/SVHN/LFW). Adding Gaussian
noise to the shared gradient defends: with variance at or above 1e-2 the reconstruction fails,
below 1e-4 it is not affected (Figure 4a).

**Ours.** `examples/inversion.toml`: DLG's LeNet on the 8x8 digits, one digit per client, one
local SGD step (so the update is `-lr x gradient`), DLG on two clients of round 1. The noise
defense is local DP (`defense.dp.mode = "local"`): each update is clipped to norm 1 and noised
with std `sigma` on the client; the gradient the server reads off the update then carries
noise of std `sigma / lr`.""",
    ),
    ("code", SETUP),
    (
        "code",
        """ITERATIONS = size(300, 20)
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
          f"labels {[r['label_accuracy'] for r in result.attacks]}")""",
    ),
    (
        "code",
        """xs = [max(s / 0.1, 1e-6) for s in SIGMAS]
plt.figure(figsize=(5, 3.2))
plt.semilogx(xs, [sum(p) / len(p) for p in psnr.values()], marker="o")
plt.xlabel("std of the noise on the gradient (1e-6 = none)")
plt.ylabel("mean PSNR of DLG (dB)")
plt.grid(alpha=0.3)
plt.show()""",
    ),
    (
        "md",
        """**Where ours differs, and why.** Without noise DLG recovers the digits almost exactly, as
in Figure 3: at the full size here (one seed, two digits) PSNR is 78-81 dB and every label
is right. Noise on the gradient of std 1e-3 (variance 1e-6) brings it to 37 dB, std 1e-2
(variance 1e-4) to 18 dB, and std 1e-1 (variance 1e-2, the paper's threshold) to 4 dB: noise.
So the paper's threshold holds, but our reconstructions degrade at smaller noise than the
paper reports (it saw leakage at variance 1e-4 still succeed). Reasons: we measure PSNR,
which falls long before an image stops being recognizable, where the paper judges images
and the matching loss; the images are 8x8 digits rather than 28x28 or 32x32; and the noise
is added to the *update* after clipping it to norm 1 (local DP, what a privfl client can
do), so the x axis is the equivalent gradient noise std `sigma / lr`. The inversion suite
(`privfl bench benchmarks/suites/inversion.toml`) runs the same grid with every method.""",
    ),
    (
        "code",
        """if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: near-exact without noise, destroyed at variance 1e-2
    assert min(psnr[0.0]) > 60 and max(psnr[SIGMAS[-1]]) < 10
    print("checked")""",
    ),
]

NOTEBOOKS["geiping2020_inverting_gradients"] = [
    (
        "md",
        """# Geiping et al. 2020: Inverting Gradients

*Inverting Gradients - How easy is it to break privacy in federated learning?*
(NeurIPS 2020).

**The claim.** Matching the *direction* of the gradient (cosine distance) with a total-variation
prior, optimized with Adam on signed gradients, reconstructs images where L2 matching (DLG)
fails, and it does so even from a FedAvg update of several local steps when the attacker
replays the local training (Section 4, Figure 5 / Table 2: recognizable CIFAR images from
updates of 1-5 local steps).

**Ours.** `examples/inversion.toml` with 5 local SGD steps per client: iDLG (reads the update
as one gradient) against IG (replays the 5 steps on its candidate images), two clients each.""",
    ),
    ("code", SETUP),
    (
        "code",
        """STEPS = 5
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
          f"SSIM {[round(r['ssim'], 3) for r in result.attacks]}")""",
    ),
    (
        "code",
        """plt.figure(figsize=(4, 3))
plt.bar(list(records), [sum(r["psnr"] for r in v) / len(v) for v in records.values()])
plt.ylabel("mean PSNR (dB)")
plt.title(f"{STEPS} local steps")
plt.show()""",
    ),
    (
        "md",
        """**Where ours differs, and why.** As in the paper, treating a multi-step update as one
gradient fails while IG, which replays the local steps, recovers the digits: at the full size
here (two digits, one seed) iDLG reaches 3.8 and 4.7 dB (SSIM 0.11 and 0.20), IG 38.8 and
34.2 dB (SSIM 0.999 and 0.998). Our images are 8x8 digits through DLG's small sigmoid
LeNet rather than CIFAR-10 through a ResNet, so IG needs 1,000 iterations instead of 24,000
and one restart; the TV weight is the paper's 1e-4 (natural 32x32 `patches` need about
1e-2). At the notebooks' test size (30 iterations) IG has not converged and the gap is
small: that run is a smoke test, not the result.""",
    ),
    (
        "code",
        """if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: replaying the local steps beats reading one gradient
    mean = {m: sum(r["psnr"] for r in v) / len(v) for m, v in records.items()}
    assert mean["ig"] > mean["idlg"] + 10
    print("checked")""",
    ),
]

NOTEBOOKS["mcmahan2018_dp_fedavg"] = [
    (
        "md",
        """# McMahan et al. 2018: DP-FedAvg, accuracy against epsilon

*Learning Differentially Private Recurrent Language Models* (ICLR 2018).

**The claim.** User-level differential privacy (each user's whole data protected) costs little
accuracy when the population is large: DP-FedAvg (clients Poisson-sampled, updates clipped,
Gaussian noise on the sum, moments accountant) trains an LSTM language model on 763,430 users
to nearly the non-private accuracy at (4.6, 1e-9)-DP with about 5,000 users a round
(Table 1 / Figure 3); with few users a round the noise dominates and accuracy falls.

**Ours.** Digits with 100 users (IID, about 14 images each), 30 expected a round, 15 rounds,
DP-FedAvg (`defense.dp.mode = "central"`) calibrated to each target epsilon at delta 1e-5,
against the same run without DP.""",
    ),
    ("code", SETUP),
    (
        "code",
        """ROUNDS = size(15, 2)
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
print(f"without DP: accuracy {plain:.3f}")""",
    ),
    (
        "code",
        """plt.figure(figsize=(5, 3.2))
plt.semilogx(*zip(*points, strict=True), marker="o", label="DP-FedAvg")
plt.axhline(plain, ls="--", color="grey", label="no DP")
plt.xlabel("epsilon (delta = 1e-5)")
plt.ylabel("final test accuracy")
plt.legend()
plt.grid(alpha=0.3)
plt.show()""",
    ),
    (
        "md",
        """**Where ours differs, and why.** The shape is the paper's: accuracy rises with epsilon
toward the non-private run. Measured at the full size here (one seed): 0.32 at epsilon 1,
0.80 at 4, 0.82 at 16 and 64, against 0.87 without DP. Two differences in level. With 30
users a round the noise on the average is `sigma x clip / 30` per coordinate, against
`sigma x clip / 5000` in the paper, so at small epsilon our model barely learns where the
paper's loses almost nothing (the paper's own point: DP-FedAvg needs large cohorts). And a
gap of about 5 points stays even at epsilon 64, where the noise is negligible: it comes from
clipping every update to norm 1 and weighting users equally (DP-FedAvg's estimator), not from
the noise. Also: delta is 1e-5 (the paper's 1e-9 suits its 763k users; ours has 100), the
accountant is Opacus' RDP with the Balle et al. 2020 conversion (tighter than the moments
accountant the paper used), and the model is an MLP on digits, not an LSTM on Reddit posts.""",
    ),
    (
        "code",
        """if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: accuracy rises with epsilon toward the non-private run
    accs = [a for _, a in points]
    assert accs[-1] > accs[0] + 0.2 and accs[-1] <= plain + 0.02
    print("checked")""",
    ),
]

NOTEBOOKS["baruch2019_alie"] = [
    (
        "md",
        """# Baruch et al. 2019: A Little Is Enough

*A Little Is Enough: Circumventing Defenses For Distributed Learning* (NeurIPS 2019).

**The claim.** Colluding malicious clients that send `mu - z sigma` (the benign mean shifted by
a small multiple of the per-coordinate standard deviation, `z` from the number of clients and
attackers) stay within the spread of honest updates, so Krum, the trimmed mean and Bulyan
keep them, and accuracy drops (Table 2: MNIST with 20% malicious workers, e.g. Krum and
trimmed mean lose several points; CIFAR-10 far more), while the attack is cheap and needs
no knowledge beyond the benign statistics.

**Ours.** Baruch et al.'s setting as a federation: digits, 50 IID clients, every client
every round, one local SGD step of batch 10 (distributed SGD), 150 rounds, 20% malicious,
`z = z_max` of the paper (0.468 for 10 of 50), and `z = 1.5` against the trimmed mean.""",
    ),
    ("code", SETUP),
    (
        "code",
        """ROUNDS = size(150, 3)
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
print(f"trimmed_mean under ALIE with z = 1.5: {acc['trimmed_mean', 1.5]:.3f}")""",
    ),
    (
        "code",
        """names = list(RULES)
x = range(len(names))
plt.figure(figsize=(6, 3.2))
plt.bar([i - 0.2 for i in x], [acc[n, False] for n in names], 0.4, label="no attack")
plt.bar([i + 0.2 for i in x], [acc[n, None] for n in names], 0.4, label="ALIE, 20%")
plt.xticks(list(x), names)
plt.ylabel("final test accuracy")
plt.legend()
plt.show()""",
    ),
    (
        "md",
        """**Where ours differs, and why.** This is the setting of the project's slow poisoning
test (`tests/attacks/poisoning/test_poisoning_qualitative.py`), which measured ALIE taking
Krum from 0.897 to 0.816 and the trimmed mean from 0.903 to 0.889 at `z_max` and to 0.819 at
`z = 1.5`: the paper's direction (Krum, which keeps one update, falls most; the
coordinate-wise rules need a larger `z`), with smaller drops than the paper's MNIST table
because digits with a 4,810-parameter MLP is an easy, well-separated task and 150 rounds of
one step stop far from convergence; the paper also trains with momentum and several seeds.
The full-size run of this notebook (9 runs of 150 rounds of 50 clients) did not finish
within 15 minutes on the shared machine when these notes were written, so its mean and
median rows are not quoted here; the check below asserts the test's two figures. A shorter
trial (20 clients, 40 rounds, learning rate 0.5) showed no drop at all: ALIE's `z_max` is
small for 20 clients, and the attack needs the paper's many-client setting.""",
    ),
    (
        "code",
        """if SMALL:
    print("small size: the claim is not checked")
else:  # the claim, checked: ALIE gets past Krum, and past the trimmed mean at z = 1.5
    assert acc["krum", False] - acc["krum", None] >= 0.04
    assert acc["trimmed_mean", False] - acc["trimmed_mean", 1.5] >= 0.04
    print("checked")""",
    ),
]

NOTEBOOKS["bonawitz2017_secagg"] = [
    (
        "md",
        """# Bonawitz et al. 2017: the cost of secure aggregation against the number of clients

*Practical Secure Aggregation for Privacy-Preserving Machine Learning* (CCS 2017).

**The claim.** With pairwise masks and Shamir-shared seeds, each client's communication is
`O(n + m)` (the masked vector of `m` values plus keys and shares for `n` peers) and its
computation `O(n^2 + m n)`, so the protocol is practical for hundreds of clients; the server's
computation grows as `O(m n^2)`, and dropouts make it costlier (Table 1, Figures 6-8: client
and server running time against n, with 0% to 30% dropout).

**Ours.** One round of privfl's secure aggregation (X25519 key agreement, Shamir shares,
ChaCha20 masks) on a small MLP, for several cohort sizes `n`, with and without 10% dropout:
bytes each client uploads and the round's wall-clock time, against the plain channel.""",
    ),
    ("code", SETUP),
    (
        "code",
        """COHORTS = [10, 20, 40, 80] if not SMALL else [4, 8]
def config(n, secagg):
    return privfl.Config(
        name="secagg-cost",
        data={"name": "digits", "partition": "iid", "clients": n},
        model={"name": "mlp", "hidden": [16]},
        federation={"rounds": 1, "clients_per_round": n, "local_steps": 1, "batch_size": 8},
        defense={"secagg": secagg} if secagg is not None else {},
    )
rows = []
for n in COHORTS:
    row = {"n": n}
    for label, secagg in (("plain", None), ("secagg", {"threshold": 0.6}),
                          ("secagg 10% dropout", {"threshold": 0.6, "dropout": 0.1})):
        r = privfl.run(config(n, secagg), out=None, progress=False)
        row[label + " bytes/client"] = r.metrics[-1]["bytes_up"] / n
        row[label + " s"] = r.timings[-1]["aggregate_seconds"]
    rows.append(row)
for row in rows:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
ns = [r["n"] for r in rows]
for label in ("plain", "secagg", "secagg 10% dropout"):
    axes[0].plot(ns, [r[label + " bytes/client"] for r in rows], marker="o", label=label)
    axes[1].plot(ns, [r[label + " s"] for r in rows], marker="o", label=label)
axes[0].set(xlabel="clients n", ylabel="bytes uploaded per client")
axes[1].set(xlabel="clients n", ylabel="aggregation seconds (server side)")
axes[0].legend()
plt.show()""",
    ),
    (
        "md",
        """**Where ours differs, and why.** Measured at the full size here: each client uploads
4,840 bytes in the plain channel (1,210 float32 values) whatever `n`, and under secure
aggregation 6,374, 7,944, 11,084 and 17,364 bytes at `n` = 10, 20, 40, 80: exactly linear,
157 bytes more per peer (its public keys and one encrypted share for each peer), the paper's
`O(n + m)`. The round's aggregation time grows faster than linearly (0.14, 0.31, 1.1 and
3.2 s), consistent with the quadratic terms. Where we differ: with 10% dropout neither bytes
nor time went up here (the average upload is lower, since a client that vanishes early sends
less), whereas the paper's server pays `O(m n^2)` to recover dropped clients' masks. With
a 1,210-parameter vector, against the paper's 100k to 500k, regenerating a few masks is cheap
next to the survivors' key agreements, and the difference is within the noise of this busy
two-core machine. Our times are one process's wall clock, clients and server together, where
the paper timed them apart on dedicated hardware; `benchmarks/perf/secagg_cost.py` measures
CPU time.""",
    ),
    (
        "code",
        """# the claim, checked (at any size): the plain upload does not depend on n, the secure
# one grows with n, by the same number of bytes per peer (linear in n)
plain = {r["plain bytes/client"] for r in rows}
secure = [r["secagg bytes/client"] for r in rows]
pairs = list(zip(secure, secure[1:], ns, ns[1:], strict=False))
per_peer = [(b - a) / (m - n) for a, b, n, m in pairs]
assert len(plain) == 1 and all(b > a for a, b, _, _ in pairs)
assert max(per_peer) - min(per_peer) < 1e-9
print(f"checked: {per_peer[0]:.0f} bytes more per peer")""",
    ),
]


def build(directory: Path = HERE) -> list[Path]:
    """Write every notebook into ``directory``, its code formatted by ``ruff format`` (the
    project's style, which ``make lint`` checks); returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        path = directory / f"{name}.ipynb"
        nbformat.write(_nb(cells), path)
        paths.append(path)
    ruff = [sys.executable, "-m", "ruff", "format", "--quiet"]
    subprocess.run([*ruff, *map(str, paths)], check=True)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
