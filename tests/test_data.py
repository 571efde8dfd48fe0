"""Tests of gtn_nas.data: splits, adaptation, normalisation, file formats, errors and loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from gtn_nas.data import DataSplits, dataset_names, load_dataset, make_loaders
from gtn_nas.errors import ConfigError, DataError
from tests.conftest import image_tree

FASHION_SYSTEM_ROOT = Path("/usr/share/datasets/fashion-mnist")


def _items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


# --------------------------------------------------------------------------- registry / arguments

def test_all_datasets_registered() -> None:
    assert {"digits", "fashion-mnist", "cifar100", "imagefolder", "synthetic"} <= set(dataset_names())


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("digit")
    assert "digits" in _one_line(info)


@pytest.mark.parametrize("kwargs", [
    dict(val_fraction=0.0), dict(test_fraction=1.0), dict(val_fraction=0.5, test_fraction=0.5),
    dict(image_size=2), dict(channels=2), dict(limit=0), dict(bogus=1),
])
def test_bad_arguments_raise_one_line_config_error(kwargs) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", **kwargs)
    _one_line(info)


# --------------------------------------------------------------------------- digits

def test_digits_splits_partition_stratified(digits: DataSplits) -> None:
    parts = [digits.train, digits.val, digits.test]
    assert sum(len(p) for p in parts) == 1797
    assert (len(digits.test), len(digits.val)) == (359, 180)
    indices = torch.cat([p.indices for p in parts])
    assert torch.equal(indices.sort().values, torch.arange(1797))  # disjoint and complete
    for part in parts:
        counts = torch.bincount(part.labels, minlength=10)
        assert (counts > 0).all()
        shares = counts.float() / len(part)
        assert (shares - 0.1).abs().max() < 0.03  # each class ~10% in every split


def test_digits_split_depends_only_on_seed(digits: DataSplits) -> None:
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(digits, name).indices, getattr(again, name).indices)
    assert not torch.equal(digits.test.indices, other.test.indices)


def test_digits_shapes_labels_metadata(digits: DataSplits) -> None:
    image, label = digits.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grayscale repeated
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 3, 8)
    assert digits.class_names == tuple("0123456789")
    _, labels = _items(digits.test)
    assert labels.min() == 0 and labels.max() == 9
    small = load_dataset("digits", channels=1, image_size=16)
    assert small.val[0][0].shape == (1, 16, 16)
    assert (small.in_channels, small.image_size) == (1, 16)


def test_digits_augmentation_train_only(digits: DataSplits) -> None:
    torch.manual_seed(0)
    val_a, _ = _items(digits.val)
    val_b, _ = _items(digits.val)
    assert torch.equal(val_a, val_b)
    assert torch.equal(_items(digits.test)[0], _items(digits.test)[0])
    first = torch.stack([digits.train[i][0] for i in range(20)])
    second = torch.stack([digits.train[i][0] for i in range(20)])
    assert not torch.equal(first, second)
    plain = load_dataset("digits", augment=False)
    assert torch.equal(plain.train[3][0], plain.train[3][0])


def test_digits_augmentation_is_shift_without_flip() -> None:
    augmented = load_dataset("digits", channels=1)
    plain = load_dataset("digits", channels=1, augment=False)
    padded = torch.nn.functional.pad(plain.train[0][0], (1, 1, 1, 1))  # padding 8 // 8 = 1
    shifts = [padded[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)]
    torch.manual_seed(1)
    seen = set()
    for _ in range(60):
        image = augmented.train[0][0]
        matches = [k for k, shift in enumerate(shifts) if torch.equal(image, shift)]
        assert matches, "augmented digit is not a padded crop (flipped?)"
        seen.add(matches[0])
    assert len(seen) > 3


def test_digits_normalised_on_train() -> None:
    plain = load_dataset("digits", augment=False, channels=1)
    images, _ = _items(plain.train)
    assert abs(images.mean().item()) < 1e-4
    assert abs(images.std().item() - 1) < 1e-3
    assert abs(_items(plain.val)[0].mean().item()) < 0.1  # same constants, similar data


def test_digits_limit_is_seeded_and_stratified() -> None:
    a = load_dataset("digits", limit=50, seed=3)
    b = load_dataset("digits", limit=50, seed=3)
    assert len(a.train) == 50 and torch.equal(a.train.indices, b.train.indices)
    assert (torch.bincount(a.train.labels, minlength=10) == 5).all()
    assert set(a.train.indices.tolist()) <= set(load_dataset("digits", seed=3).train.indices.tolist())


# --------------------------------------------------------------------------- fashion-mnist

def _write_idx(path: Path, array: torch.Tensor, compress: bool = True) -> None:
    data = bytes([0, 0, 8, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    data += array.to(torch.uint8).numpy().tobytes()
    if compress:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_fashion(folder: Path, compress: bool = True) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    arrays = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (20, 28, 28), generator=gen),
        "train-labels-idx1-ubyte": torch.arange(20) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (10, 28, 28), generator=gen),
        "t10k-labels-idx1-ubyte": torch.arange(10).flip(0),
    }
    for name, array in arrays.items():
        _write_idx(folder / (name + (".gz" if compress else "")), array, compress)
    return arrays


def test_fashion_idx_round_trip(tmp_path: Path) -> None:
    arrays = _fake_fashion(tmp_path)
    splits = load_dataset("fashion-mnist", root=tmp_path, channels=1, augment=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 10)
    assert splits.class_names[0] == "T-shirt/top" and splits.num_classes == 10
    images, labels = _items(splits.test)
    assert images.shape == (10, 1, 28, 28)
    assert torch.equal(labels, arrays["t10k-labels-idx1-ubyte"])
    (mean,), (std,) = splits.test.mean, splits.test.std
    raw = (images[:, 0] * std + mean) * 255
    assert torch.allclose(raw, arrays["t10k-images-idx3-ubyte"].float(), atol=1e-3)
    train_images, train_labels = _items(splits.train)
    assert torch.equal(train_labels, arrays["train-labels-idx1-ubyte"][splits.train.indices])
    rgb = load_dataset("fashion-mnist", root=tmp_path, image_size=32)
    assert rgb.train[0][0].shape == (3, 32, 32) and rgb.image_size == 32


def test_fashion_uncompressed_torchvision_layout(tmp_path: Path) -> None:
    _fake_fashion(tmp_path / "FashionMNIST" / "raw", compress=False)
    splits = load_dataset("fashion-mnist", root=tmp_path)
    assert len(splits.test) == 10 and splits.test[0][0].shape == (3, 28, 28)


@pytest.mark.parametrize("damage", ["magic", "truncated_data", "truncated_gzip"])
def test_fashion_malformed_file(tmp_path: Path, damage: str) -> None:
    _fake_fashion(tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    if damage == "magic":
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + raw[4:]))
    elif damage == "truncated_data":
        target.write_bytes(gzip.compress(raw[:-100]))
    else:
        target.write_bytes(target.read_bytes()[:60])
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in _one_line(info)


def test_fashion_label_out_of_range_names_the_file_the_item_and_the_value(tmp_path: Path
                                                                          ) -> None:
    arrays = _fake_fashion(tmp_path)
    labels = arrays["train-labels-idx1-ubyte"].clone()
    labels[13] = 12
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, True)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    message = _one_line(info)
    assert "train-labels-idx1-ubyte.gz" in message and "out of range 0..9" in message
    assert "the first: 12 at item 13" in message


def test_fashion_images_and_labels_of_different_lengths(tmp_path: Path) -> None:
    arrays = _fake_fashion(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"][:7], True)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    message = _one_line(info)
    assert "(10 images)" in message and "(7 labels)" in message and "do not match" in message


def test_fashion_missing_root_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=missing)
    assert str(missing) in _one_line(info)
    _fake_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    message = _one_line(info)
    assert "train-labels-idx1-ubyte.gz" in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.skipif(not FASHION_SYSTEM_ROOT.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_real_dataset() -> None:
    splits = load_dataset("fashion-mnist", limit=500)
    assert splits.num_classes == 10 and len(splits.test) == 10000 and len(splits.train) == 500
    assert len(splits.val) == 6000
    assert set(splits.test.labels.tolist()) == set(range(10))
    assert splits.train[0][0].shape == (3, 28, 28)


# --------------------------------------------------------------------------- cifar100

def test_cifar100_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", root=tmp_path)
    message = _one_line(info)
    assert str(tmp_path) in message and "cifar-100-python" in message and "--download" in message


def test_cifar100_empty_folder_wrapped(tmp_path: Path) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", root=tmp_path)
    assert "cifar-100-python" in _one_line(info)


# --------------------------------------------------------------------------- imagefolder

def test_imagefolder_layout_with_test(tmp_path: Path) -> None:
    image_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    splits = load_dataset("imagefolder", root=tmp_path)
    assert splits.class_names == ("cat", "dog", "fox") and splits.num_classes == 3
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 6)
    image, label = splits.test[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 2
    gray = load_dataset("imagefolder", root=tmp_path, image_size=16, channels=1)
    assert gray.train[0][0].shape == (1, 16, 16) and gray.image_size == 16


def test_imagefolder_test_carved_from_val(tmp_path: Path) -> None:
    image_tree(tmp_path, {"train": 4, "val": 3})
    splits = load_dataset("imagefolder", root=tmp_path, seed=1)
    assert len(splits.train) == 12 and len(splits.val) + len(splits.test) == 9
    assert len(splits.test) == 6  # share test/(val+test) = 0.2/0.3
    again = load_dataset("imagefolder", root=tmp_path, seed=1)
    assert splits.test.samples == again.test.samples
    assert not set(splits.test.samples) & set(splits.val.samples)


def test_imagefolder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root=missing)
    assert str(missing) in _one_line(info)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root=tmp_path / "empty")
    assert "<root>/train/<class>" in _one_line(info)
    image_tree(tmp_path / "mixed", {"train": 2})
    image_tree(tmp_path / "mixed", {"val": 2}, classes=("cat", "dog", "owl"))
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root=tmp_path / "mixed")
    message = _one_line(info)
    assert "fox" in message and "owl" in message


# --------------------------------------------------------------------------- synthetic

def test_synthetic_deterministic_and_options() -> None:
    a = load_dataset("synthetic", seed=5, augment=False)
    b = load_dataset("synthetic", seed=5, augment=False)
    c = load_dataset("synthetic", seed=6, augment=False)
    assert torch.equal(_items(a.train)[0], _items(b.train)[0])
    assert not torch.equal(_items(a.train)[0], _items(c.train)[0])
    assert (a.num_classes, a.image_size, len(a.train) + len(a.val) + len(a.test)) == (10, 8, 512)
    small = load_dataset("synthetic", num_classes=4, size=12, num_examples=100, channels_native=1)
    assert (small.num_classes, small.image_size, small.class_names[-1]) == (4, 12, "class3")
    assert len(small.train) + len(small.val) + len(small.test) == 100
    assert small.train[0][0].shape == (3, 12, 12)
    with pytest.raises(ConfigError):
        load_dataset("synthetic", num_classes=1)


def test_synthetic_is_learnable() -> None:
    splits = load_dataset("synthetic", seed=0, augment=False, num_classes=5)
    train_x, train_y = _items(splits.train)
    test_x, test_y = _items(splits.test)
    centroids = torch.stack([train_x[train_y == k].mean(0) for k in range(5)]).flatten(1)
    predicted = torch.cdist(test_x.flatten(1), centroids).argmin(1)
    assert (predicted == test_y).float().mean() > 0.9


# --------------------------------------------------------------------------- loaders

def test_make_loaders_order_and_shapes() -> None:
    splits = load_dataset("digits", augment=False)
    train_a, val, test = make_loaders(splits, 64, seed=3)
    train_b, _, _ = make_loaders(splits, 64, seed=3)
    train_c, _, _ = make_loaders(splits, 64, seed=4)
    batches_a, batches_b = list(train_a), list(train_b)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(batches_a, batches_b))
    assert not torch.equal(batches_a[0][1], next(iter(train_c))[1])
    images, labels = batches_a[0]
    assert images.shape == (64, 3, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert sum(len(b[1]) for b in batches_a) == len(splits.train)
    assert torch.equal(torch.cat([b[1] for b in val]), splits.val.labels)  # not shuffled
    dropped, _, _ = make_loaders(splits, 100, drop_last=True)
    assert all(len(b[1]) == 100 for b in dropped)
    with pytest.raises(ConfigError):
        make_loaders(splits, 5000, drop_last=True)


# --------------------------------------------------------------------------- broken images

def test_an_empty_image_is_refused_before_training_or_left_out(tmp_path: Path, caplog) -> None:
    image_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    empty = tmp_path / "train" / "dog" / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root=tmp_path)
    message = _one_line(info)
    assert str(empty) in message and "0 bytes" in message and "--on-bad-image skip" in message
    skipped = load_dataset("imagefolder", root=tmp_path, on_bad_image="skip")
    assert len(skipped.train) == 12 and str(empty) not in {p for p, _ in skipped.train.samples}
    with pytest.raises(ConfigError, match="on_bad_image must be one of stop, skip"):
        load_dataset("imagefolder", root=tmp_path, on_bad_image="ignore")


def test_a_corrupt_image_stops_with_its_name_or_is_replaced_by_the_next(tmp_path: Path,
                                                                        caplog) -> None:
    image_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    stopped = load_dataset("imagefolder", root=tmp_path, augment=False)
    victim = 3
    path = Path(stopped.train.samples[victim][0])
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as info:
        stopped.train[victim]
    assert str(path) in _one_line(info) and "--on-bad-image skip" in _one_line(info)
    skipped = load_dataset("imagefolder", root=tmp_path, augment=False, on_bad_image="skip")
    assert skipped.train.samples == stopped.train.samples, "the split keeps its files"
    image, label = skipped.train[victim]
    following, following_label = skipped.train[victim + 1]
    assert torch.equal(image, following) and label == following_label
    with caplog.at_level("WARNING"):
        skipped.train[victim]
        skipped.train[victim]
    assert sum(str(path) in r.getMessage() for r in caplog.records) <= 1, "said once per file"



def _bomb_png(path: Path, side: int = 60000) -> None:
    """A valid PNG whose header claims ``side`` x ``side`` pixels (CRC fixed): PIL refuses it
    with DecompressionBombError, which is not an OSError."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (2, 2)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")  # length(4) 'IHDR' width(4) height(4) ... crc(4)
    data[start + 4:start + 12] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[start:start + 17])) & 0xFFFFFFFF
    data[start + 17:start + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_an_image_claiming_an_absurd_size_stops_with_its_name_or_is_skipped(tmp_path: Path
                                                                            ) -> None:
    image_tree(tmp_path, {"train": 4, "val": 2, "test": 2})
    stopped = load_dataset("imagefolder", root=tmp_path, augment=False)
    path = Path(stopped.train.samples[1][0])
    _bomb_png(path)
    with pytest.raises(DataError) as info:
        stopped.train[1]
    assert str(path) in _one_line(info) and "--on-bad-image skip" in _one_line(info)
    skipped = load_dataset("imagefolder", root=tmp_path, augment=False, on_bad_image="skip")
    assert torch.equal(skipped.train[1][0], skipped.train[2][0])


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_train_teacher_on_a_corrupt_image_is_one_line_or_skips_it(tmp_path: Path, capsys,
                                                                  workers: int) -> None:
    """Also from a DataLoader worker process, whose error PyTorch re-raises with the worker's
    traceback in its message: the command still prints one line."""
    from gtn_nas.cli import main

    image_tree(tmp_path / "data", {"train": 4, "val": 2, "test": 2})
    bad = sorted((tmp_path / "data" / "train" / "fox").iterdir())[0]
    bad.write_bytes(b"\x89PNG broken")
    command = ["train-teacher", "--method", "standard", "--teacher", "tiny", "--data",
               "imagefolder", "--data-root", str(tmp_path / "data"), "--image-size", "8",
               "--epochs", "1", "--batch-size", "4", "--num-workers", str(workers)]
    assert main([*command, "--out", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and err.startswith("gtn-nas: error: ")
    assert main([*command, "--on-bad-image", "skip", "--out", str(tmp_path / "skip")]) == 0
