"""MNIST, CIFAR-10 and LEAF FEMNIST loaders against tiny files in the real formats."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from privfl.data.cifar10 import load_cifar10
from privfl.data.femnist import load_femnist
from privfl.data.mnist import load_mnist
from privfl.errors import DataError

MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# --------------------------------------------------------------------------- MNIST


def _pixels(n: int, h: int, w: int, seed: int) -> list[list[list[int]]]:
    return [
        [[(seed + i * 37 + r * 11 + c * 3) % 256 for c in range(w)] for r in range(h)]
        for i in range(n)
    ]


def _idx3(images: list[list[list[int]]]) -> bytes:
    n, h, w = len(images), len(images[0]), len(images[0][0])
    return struct.pack(">BBBBIII", 0, 0, 0x08, 3, n, h, w) + bytes(
        v for img in images for row in img for v in row
    )


def _idx1(labels: list[int]) -> bytes:
    return struct.pack(">BBBBI", 0, 0, 0x08, 1, len(labels)) + bytes(labels)


def _write(path: Path, data: bytes, gz: bool) -> None:
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _write_mnist(
    directory: Path, *, gz_train: bool, gz_test: bool, h: int = 28, w: int = 28
) -> dict[str, object]:
    train_x, train_y = _pixels(5, h, w, seed=1), [5, 0, 4, 1, 9]
    test_x, test_y = _pixels(3, h, w, seed=200), [7, 2, 1]
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / MNIST_NAMES[0], _idx3(train_x), gz_train)
    _write(directory / MNIST_NAMES[1], _idx1(train_y), gz_train)
    _write(directory / MNIST_NAMES[2], _idx3(test_x), gz_test)
    _write(directory / MNIST_NAMES[3], _idx1(test_y), gz_test)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _expected_images(images: list[list[list[int]]]) -> torch.Tensor:
    # Built element by element, independent of the loader's vectorised conversion.
    n, h, w = len(images), len(images[0]), len(images[0][0])
    out = torch.empty((n, 1, h, w), dtype=torch.float32)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                out[i, 0, r, c] = float(np.float32(images[i][r][c]) / np.float32(255))
    return out


@pytest.mark.parametrize(("gz_train", "gz_test"), [(False, False), (True, True), (False, True)])
def test_mnist_loads_exact_pixels_and_labels(tmp_path: Path, gz_train: bool, gz_test: bool) -> None:
    written = _write_mnist(tmp_path, gz_train=gz_train, gz_test=gz_test)
    bundle = load_mnist(tmp_path)
    assert bundle.name == "mnist"
    assert bundle.num_classes == 10
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.train.x.shape == (5, 1, 28, 28)
    assert bundle.test.x.shape == (3, 1, 28, 28)
    assert bundle.train.x.dtype == torch.float32
    assert bundle.train.y.dtype == torch.int64
    assert torch.equal(bundle.train.x, _expected_images(written["train_x"]))
    assert torch.equal(bundle.test.x, _expected_images(written["test_x"]))
    assert bundle.train.y.tolist() == written["train_y"]
    assert bundle.test.y.tolist() == written["test_y"]
    assert float(bundle.train.x.min()) >= 0.0 and float(bundle.train.x.max()) <= 1.0
    # A known pixel: image 2, row 3, column 4 of the training set.
    assert bundle.train.x[2, 0, 3, 4].item() == pytest.approx(((1 + 2 * 37 + 33 + 12) % 256) / 255)


def test_mnist_uses_the_dimensions_from_the_files(tmp_path: Path) -> None:
    written = _write_mnist(tmp_path, gz_train=False, gz_test=False, h=7, w=5)
    bundle = load_mnist(tmp_path)
    assert bundle.train.x.shape == (5, 1, 7, 5)
    assert torch.equal(bundle.train.x, _expected_images(written["train_x"]))


def test_mnist_missing_file_lists_names_and_fetch_command(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz_train=True, gz_test=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    for name in MNIST_NAMES:
        assert name in message
    assert f"privfl data fetch mnist --dir {tmp_path}" in message
    assert "missing t10k-labels-idx1-ubyte" in message


def test_mnist_missing_folder_lists_names_and_fetch_command(tmp_path: Path) -> None:
    folder = tmp_path / "absent"
    with pytest.raises(DataError) as info:
        load_mnist(folder)
    message = str(info.value)
    assert all(name in message for name in MNIST_NAMES)
    assert f"privfl data fetch mnist --dir {folder}" in message


def test_mnist_truncated_images_raise_naming_the_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz_train=False, gz_test=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_mnist_image_label_count_mismatch_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz_train=False, gz_test=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx1([1, 2, 3]))
    with pytest.raises(DataError, match="5 images but .* 3 labels"):
        load_mnist(tmp_path)


def test_mnist_out_of_range_label_raises(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz_train=False, gz_test=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx1([7, 12, 1]))
    with pytest.raises(DataError, match="labels in \\[1, 12\\]"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_rows(batch: int) -> np.ndarray:
    rows = np.empty((2, 3072), dtype=np.uint8)
    for k in range(2):
        for j in range(3072):
            rows[k, j] = (batch * 53 + k * 101 + j * 7) % 256
    return rows


def _cifar_labels(batch: int) -> list[int]:
    return [batch % 10, (batch * 3 + 1) % 10]


def _write_cifar(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b, name in enumerate(CIFAR_BATCHES):
        doc = {
            b"batch_label": f"batch {b}".encode(),
            b"labels": _cifar_labels(b),  # a list of ints, as in the real files
            b"data": _cifar_rows(b),
            b"filenames": [b"a.png", b"b.png"],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(doc, f, protocol=2)


def _cifar_expected(batches: range) -> torch.Tensor:
    out = []
    for b in batches:
        rows = _cifar_rows(b)
        img = np.empty((2, 3, 32, 32), dtype=np.float32)
        for k in range(2):
            for c in range(3):
                for r in range(32):
                    for col in range(32):
                        img[k, c, r, col] = np.float32(rows[k, c * 1024 + r * 32 + col]) / 255
        out.append(img)
    return torch.from_numpy(np.concatenate(out))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "cifar-10-batches-py"])
def test_cifar10_loads_exact_pixels_and_labels(tmp_path: Path, nested: bool) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py" if nested else tmp_path)
    bundle = load_cifar10(tmp_path)
    assert bundle.name == "cifar10"
    assert bundle.num_classes == 10
    assert bundle.train.x.shape == (10, 3, 32, 32)
    assert bundle.test.x.shape == (2, 3, 32, 32)
    assert bundle.train.x.dtype == torch.float32
    assert torch.equal(bundle.train.x, _cifar_expected(range(0, 5)))
    assert torch.equal(bundle.test.x, _cifar_expected(range(5, 6)))
    assert bundle.train.y.dtype == torch.int64
    assert bundle.train.y.tolist() == sum((_cifar_labels(b) for b in range(5)), [])
    assert bundle.test.y.tolist() == _cifar_labels(5)
    # Channel-major rows: the green value of pixel (0, 0) of the first image is byte 1024.
    assert bundle.train.x[0, 1, 0, 0].item() == pytest.approx(((1024 * 7) % 256) / 255)


def test_cifar10_missing_batch_lists_names_and_fetch_command(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert all(name in message for name in CIFAR_BATCHES)
    assert "cifar-10-batches-py" in message
    assert f"privfl data fetch cifar10 --dir {tmp_path}" in message
    assert "missing test_batch" in message


def test_cifar10_missing_folder_gives_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="privfl data fetch cifar10 --dir"):
        load_cifar10(tmp_path / "absent")


def test_cifar10_wrong_row_length_raises(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="data_batch_3.*\\(n, 3072\\)"):
        load_cifar10(tmp_path)


class _Exploit:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.target,))


def test_cifar10_pickle_cannot_run_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    target = tmp_path / "pwned"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Exploit(str(target)), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(tmp_path)
    assert not target.exists()


# --------------------------------------------------------------------------- FEMNIST


def _femnist_x(user: str, n: int) -> list[list[float]]:
    base = sum(map(ord, user))
    # Multiples of 1/256 are exact in float32, so the expected values need no tolerance.
    return [[((base + k * 13 + p) % 257) / 256 for p in range(784)] for k in range(n)]


def _leaf_doc(users: dict[str, tuple[list[list[float]], list[int]]]) -> dict[str, object]:
    return {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }


def _write_femnist(root: Path) -> dict[str, dict[str, tuple[list[list[float]], list[int]]]]:
    train = {
        "f_b": (_femnist_x("f_b", 2), [61, 3]),
        "f_a": (_femnist_x("f_a", 1), [10]),
        "f_c": (_femnist_x("f_c", 2), [0, 35]),
    }
    test = {
        "f_c": (_femnist_x("f_c-test", 1), [7]),
        "f_a": (_femnist_x("f_a-test", 1), [60]),
        "f_d": (_femnist_x("f_d", 1), [1]),  # a writer only in the test split
    }
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir(parents=True)
    (root / "train" / "all_data_0_niid_05_keep_0_train_9.json").write_text(
        json.dumps(_leaf_doc({"f_b": train["f_b"], "f_a": train["f_a"]}))
    )
    (root / "train" / "all_data_1_niid_05_keep_0_train_9.json").write_text(
        json.dumps(_leaf_doc({"f_c": train["f_c"]}))
    )
    (root / "test" / "all_data_0_niid_05_keep_0_test_9.json").write_text(
        json.dumps(_leaf_doc(test))
    )
    return {"train": train, "test": test}


def _femnist_expected(split: dict[str, tuple[list[list[float]], list[int]]], order: list[str]):
    x = [row for u in order for row in split[u][0]]
    y = [label for u in order for label in split[u][1]]
    return torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28), y


@pytest.mark.parametrize("layout", ["flat", "leaf"])
def test_femnist_loads_users_with_consistent_groups(tmp_path: Path, layout: str) -> None:
    written = _write_femnist(tmp_path / "data" if layout == "leaf" else tmp_path)
    bundle = load_femnist(tmp_path)
    assert bundle.name == "femnist"
    assert bundle.num_classes == 62
    assert bundle.input_shape == (1, 28, 28)
    # Writers sorted by name over both splits: f_a=0, f_b=1, f_c=2, f_d=3.
    x, y = _femnist_expected(written["train"], ["f_a", "f_b", "f_c"])
    assert torch.equal(bundle.train.x, x)
    assert bundle.train.y.tolist() == y == [10, 61, 3, 0, 35]
    assert bundle.train.groups is not None and bundle.test.groups is not None
    assert bundle.train.groups.dtype == np.int64
    assert bundle.train.groups.tolist() == [0, 1, 1, 2, 2]
    x, y = _femnist_expected(written["test"], ["f_a", "f_c", "f_d"])
    assert torch.equal(bundle.test.x, x)
    assert bundle.test.y.tolist() == y == [60, 7, 1]
    assert bundle.test.groups.dtype == np.int64
    assert bundle.test.groups.tolist() == [0, 2, 3]
    assert bundle.train.y.dtype == torch.int64


def test_femnist_missing_explains_leaf_preprocessing(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_femnist(tmp_path)
    message = str(info.value)
    assert "preprocess.sh -s niid --sf 0.05 -k 0 -t sample" in message
    assert "https://github.com/TalwalkarLab/leaf" in message
    assert str(tmp_path / "train") in message
    assert str(tmp_path / "data" / "test") in message


def test_femnist_bad_row_length_raises_naming_file_and_user(tmp_path: Path) -> None:
    _write_femnist(tmp_path)
    bad = _leaf_doc({"f_z": ([[0.5] * 10], [3])})
    (tmp_path / "train" / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="bad.json.*f_z.*784"):
        load_femnist(tmp_path)


def test_femnist_label_out_of_range_raises(tmp_path: Path) -> None:
    _write_femnist(tmp_path)
    bad = _leaf_doc({"f_z": ([[0.5] * 784], [62])})
    (tmp_path / "test" / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="bad.json.*f_z"):
        load_femnist(tmp_path)


def test_data_sets_hold_images_in_row_major_strides() -> None:
    # numpy gives a size-1 axis any stride; a unit channel stride makes PyTorch read
    # one-channel images as channels-last, which sent CNNs down channels-last kernels and
    # broke Opacus' per-example gradients (docs/dp.md, "Limits"). ArrayDataset takes the same
    # memory with row-major strides.
    from privfl.data.base import ArrayDataset
    from privfl.data.bundled import load_digits

    x = torch.empty_strided((5, 1, 4, 4), (16, 1, 4, 1)).normal_()
    w = torch.randn(3, 1, 3, 3)
    assert not torch.nn.functional.conv2d(x, w).is_contiguous()  # a channels-last output
    ds = ArrayDataset(x, torch.zeros(5, dtype=torch.int64))
    assert ds.x.stride() == (16, 16, 4, 1) and torch.equal(ds.x, x)
    assert ds.x.data_ptr() == x.data_ptr()  # no copy
    assert torch.nn.functional.conv2d(ds.x, w).is_contiguous()
    bundle = load_digits(test_fraction=0.2, rng=np.random.default_rng(0))
    for part in (bundle.train, bundle.test):
        assert part.x.stride() == (64, 64, 8, 1)
