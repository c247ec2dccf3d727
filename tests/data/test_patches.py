"""The 32x32 patches of scikit-learn's sample photographs, against a slow reference crop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_sample_images

from privfl.data.patches import SCALES, downscale, load_patches, sample_patches, tile
from privfl.seeding import numpy_rng


def test_patches_are_area_averaged_crops_of_the_photographs():
    x, y = sample_patches()
    images = load_sample_images().images
    per_scale = [
        (i.shape[0] // f // 32) * (i.shape[1] // f // 32) for f in SCALES for i in images[:1]
    ]
    assert x.shape == (2 * sum(per_scale), 3, 32, 32) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [sum(per_scale)] * 2
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Patch (row 1, col 2) of flower.jpg at scale 3, computed pixel by pixel.
    f, r, c = 3, 1, 2
    img = images[1].astype(np.float64)
    want = np.empty((3, 32, 32))
    for ch in range(3):
        for i in range(32):
            for j in range(32):
                top, left = (r * 32 + i) * f, (c * 32 + j) * f
                want[ch, i, j] = img[top : top + f, left : left + f, ch].mean() / 255.0
    cols = images[1].shape[1] // f // 32
    k = sum(per_scale) + per_scale[0] + r * cols + c  # flower's patches follow china's
    assert y[k] == 1
    np.testing.assert_allclose(x[k], want, atol=1e-6)


def test_tile_and_downscale_shapes():
    img = np.arange(70 * 100 * 3, dtype=np.float64).reshape(70, 100, 3)
    assert downscale(img, 3).shape == (23, 33, 3)
    assert tile(img, 32).shape == (2 * 3, 3, 32, 32)
    np.testing.assert_array_equal(tile(img, 32)[4], img[32:64, 32:64].transpose(2, 0, 1))


def test_load_patches_splits_stratified():
    bundle = load_patches(test_fraction=0.2, rng=numpy_rng(0, "data"))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 2
    assert len(bundle.train) + len(bundle.test) == 198
    assert np.bincount(bundle.test.y.numpy()).tolist() == [20, 20]


def test_patches_is_a_registered_data_set(make_config):
    import privfl

    cfg = make_config(
        data={"name": "patches", "partition": "iid", "clients": 4},
        model={"name": "mlp", "hidden": [8]},
        federation={"rounds": 1, "clients_per_round": 2, "batch_size": 8, "lr": 0.05},
    )
    result = privfl.run(cfg, out=None, progress=False)
    assert result.metrics[0]["test_accuracy"] is not None
    with pytest.raises(privfl.ConfigError, match="samples applies only"):
        make_config(data={"name": "patches", "samples": 10})
