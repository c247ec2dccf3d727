"""The options the paper notebooks need: reconstructions returned in the records
(``images``), DLG's noisy-gradient what-if (``noise``, ``noise_variance``; Zhu et al. 2019
§5.1), and IG without replaying the local steps (``replay = false``; the ablation of Geiping
et al. 2020 §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inversion_fixtures import *  # noqa: F403 (the pytest fixtures; see that module)

import privfl
from privfl.attacks.inversion import (
    InversionConfig,
    gradient_noise,
    inverting_gradients,
    record_images,
)
from privfl.client import LocalTraining
from privfl.errors import ConfigError, PrivflError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inversion.toml"
#: the example, shrunk: two clients attacked with a short DLG.
SMALL = ["federation.clients_per_round=2", "attack.inversion.max_targets=2"]


def _run(*sets: str, out=None):
    return privfl.run(privfl.load_config(EXAMPLE, [*SMALL, *sets]), out=out, progress=False)


# ------------------------------------------------------------------------ the config


def test_config_checks_the_new_options():
    assert InversionConfig(method="ig", replay=False).replay is False
    with pytest.raises(ValueError, match="replay applies only when method = 'ig'"):
        InversionConfig(method="dlg", replay=False)
    with pytest.raises(ValueError, match="needs noise_variance > 0"):
        InversionConfig(noise="gaussian")
    with pytest.raises(ValueError, match="noise_variance applies only when"):
        InversionConfig(noise_variance=1e-2)
    with pytest.raises(ValueError):
        InversionConfig(noise="uniform", noise_variance=1e-2)
    with pytest.raises(ConfigError):
        privfl.load_config(EXAMPLE, ["attack.inversion.noise=laplace"])


# ------------------------------------------------------------- images in the records


def test_records_return_the_reconstructions_beside_their_originals(tmp_path):
    result = _run("attack.inversion.images=true", "name=img", out=tmp_path)
    assert len(result.attacks) == 2
    for record in result.attacks:
        original, rec, psnr = record_images(record)
        assert original.shape == rec.shape == (1, 1, 8, 8)
        assert 0 <= float(rec.min()) and float(rec.max()) <= 1
        # the images are the ones scored: their PSNR is the record's
        mse = float(((original - rec) ** 2).mean())
        assert psnr[0] == pytest.approx(record["psnr"], rel=1e-6)
        assert psnr[0] == pytest.approx(10 * torch.log10(torch.tensor(1 / mse)).item(), abs=0.05)
        assert psnr[0] > 25  # DLG's setting: the reconstruction is the original
    # attacks.json holds the same lists
    saved = json.loads((tmp_path / "img" / "attacks.json").read_text())
    assert torch.allclose(
        torch.tensor(saved[0]["images"]["reconstruction"]),
        torch.tensor(result.attacks[0]["images"]["reconstruction"]),
    )


def test_records_hold_no_images_by_default():
    record = _run("attack.inversion.iterations=2")
    assert "images" not in record.attacks[0]
    with pytest.raises(PrivflError, match="images = true"):
        record_images(record.attacks[0])


# ------------------------------------------------------------------ noisy gradients


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_gradient_noise_has_the_asked_variance(kind):
    g = torch.Generator().manual_seed(1)
    x = gradient_noise(kind, 1e-3, torch.Size([400_000]), g)
    assert float(x.var()) == pytest.approx(1e-3, rel=0.02)
    assert abs(float(x.mean())) < 2e-4
    # Laplace has heavier tails than the Gaussian of the same variance
    kurtosis = float(((x - x.mean()) ** 4).mean() / x.var() ** 2)
    assert kurtosis == pytest.approx(6.0 if kind == "laplace" else 3.0, rel=0.1)


def test_noise_on_the_gradient_spoils_dlg_and_is_recorded():
    clean = _run("attack.inversion.method=dlg")
    noisy = _run(
        "attack.inversion.method=dlg",
        "attack.inversion.noise=laplace",
        "attack.inversion.noise_variance=0.1",
        "attack.inversion.iterations=20",
    )
    assert min(r["psnr"] for r in clean.attacks) > 25
    assert max(r["psnr"] for r in noisy.attacks) < 15
    assert noisy.attacks[0]["gradient_noise"] == {"kind": "laplace", "variance": 0.1}
    assert "gradient_noise" not in clean.attacks[0]
    again = _run(
        "attack.inversion.method=dlg",
        "attack.inversion.noise=laplace",
        "attack.inversion.noise_variance=0.1",
        "attack.inversion.iterations=20",
    )
    assert [r["psnr"] for r in again.attacks] == [r["psnr"] for r in noisy.attacks]


# ------------------------------------------------------------ IG without replaying


def test_without_replay_one_step_is_read_exactly(digits):
    # One full-batch step: the update is one gradient, so both readings see the same
    # objective and, from the same start, reach the same images.
    training = LocalTraining(lr=0.1, steps=1, batch_size=None)
    target = digits.target(torch.tensor([40, 20]), training)
    runs = [
        inverting_gradients(
            target, generator=torch.Generator().manual_seed(0), iterations=30, replay=r
        )
        for r in (True, False)
    ]
    assert torch.allclose(runs[0].x, runs[1].x, atol=1e-5)


def test_without_replay_several_steps_are_read_as_one_gradient(digits):
    # Five steps of batch 1 over two examples at a large learning rate: the replay sees the
    # order of the steps, the one-gradient reading cannot; the objectives differ.
    training = LocalTraining(lr=2.0, steps=5, batch_size=1)
    target = digits.target(torch.tensor([40, 20]), training)
    runs = {
        r: inverting_gradients(
            target, generator=torch.Generator().manual_seed(0), iterations=30, replay=r
        )
        for r in (True, False)
    }
    assert runs[True].x.shape == runs[False].x.shape == (2, 1, 8, 8)
    assert not torch.allclose(runs[True].x, runs[False].x, atol=1e-3)
