"""The in-memory datasets: ``digits`` (scikit-learn's, shipped in its wheel),
``fashion-mnist`` (IDX files, e.g. Debian's dataset-fashion-mnist), ``cifar100`` (torchvision's
files, downloaded only with ``download=True``) and ``synthetic`` (seeded prototypes + noise).

Each registers itself in :data:`gtn_nas.data.core.DATASETS`; :mod:`gtn_nas.data` imports this
module so that :func:`gtn_nas.data.load_dataset` knows them.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

from gtn_nas.data.core import (_FASHION_HINT, CACHE_ROOT, DATASETS, FASHION_CLASSES,
                               FASHION_MNIST_ROOT, DataSplits, DatasetRequest, _gather,
                               _in_memory, _is_int, _limit, _one_line, _options, _split)
from gtn_nas.errors import ConfigError, DataError

@DATASETS.register("digits")
def _digits(req: DatasetRequest) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images); test and val are fractions of all."""
    _options(req, {})
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("digits: scikit-learn is not installed; pip install scikit-learn "
                        "or choose another dataset") from exc
    bunch = load_digits()
    source = (torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1),
              torch.from_numpy(bunch.target).long())
    gen = torch.Generator().manual_seed(req.seed)
    parts = _split(req, source[1], gen, {"test": req.test_fraction, "val": req.val_fraction})
    parts["train"] = _limit(req, source[1], parts["train"], gen)
    return _in_memory(req, {k: _gather(source, i) for k, i in parts.items()}, scale=16.0,
                      class_names=tuple(str(d) for d in range(10)), flip=False)


def _read_idx(path: Path, ndim: int) -> Tensor:
    """Parses one (optionally gzip-compressed) IDX file of uint8 with ``ndim`` dimensions."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"fashion-mnist: cannot read {path} ({_one_line(exc)}); "
                        f"the file is damaged, {_FASHION_HINT}") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"fashion-mnist: {path} is not an IDX file of {ndim}-d uint8 data "
                        f"(magic {raw[:4].hex() or 'missing'}); {_FASHION_HINT}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DataError(f"fashion-mnist: {path} is truncated or damaged: its header promises "
                        f"{math.prod(dims)} bytes of data, found {len(raw) - header}; {_FASHION_HINT}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def _fashion_part(root: Path, stem: str) -> tuple[Tensor, Tensor]:
    folders = [root, root / "FashionMNIST" / "raw"]
    found = {}
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{stem}-{kind}-ubyte"
        paths = [folder / file for folder in folders for file in (f"{name}.gz", name)]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            raise DataError(f"fashion-mnist: expected {name}.gz (or {name}) in {root} or "
                            f"{folders[1]}, not found; {_FASHION_HINT}")
        found[kind] = (path, _read_idx(path, 3 if kind.startswith("images") else 1))
    (image_path, images), (label_path, labels) = found["images-idx3"], found["labels-idx1"]
    if len(images) != len(labels) or len(images) == 0:
        raise DataError(f"fashion-mnist: {image_path} ({len(images)} images) and {label_path} "
                        f"({len(labels)} labels) do not match; {_FASHION_HINT}")
    wrong = torch.nonzero(labels >= len(FASHION_CLASSES)).flatten()
    if len(wrong):
        first = int(wrong[0])
        raise DataError(f"fashion-mnist: {label_path} holds {len(wrong)} label(s) out of range "
                        f"0..{len(FASHION_CLASSES) - 1} (the first: {int(labels[first])} at "
                        f"item {first}); the file is damaged, {_FASHION_HINT}")
    return images.unsqueeze(1), labels.long()


def _official_test_split(req: DatasetRequest, train_source: tuple[Tensor, Tensor],
                         test_source: tuple[Tensor, Tensor],
                         class_names: tuple[str, ...]) -> DataSplits:
    """uint8 images with an official test set: val carved (seeded, stratified) off the official
    train set, ``limit`` applied to the rest."""
    gen = torch.Generator().manual_seed(req.seed)
    parts = _split(req, train_source[1], gen, {"val": req.val_fraction})
    train = _limit(req, train_source[1], parts["train"], gen)
    return _in_memory(req, {"train": _gather(train_source, train),
                            "val": _gather(train_source, parts["val"]),
                            "test": _gather(test_source, torch.arange(len(test_source[1])))},
                      scale=255.0, class_names=class_names)


@DATASETS.register("fashion-mnist")
def _fashion_mnist(req: DatasetRequest) -> DataSplits:
    """Fashion-MNIST from IDX files; official test set, val split off the official train set."""
    _options(req, {})
    root = req.root or Path(FASHION_MNIST_ROOT)
    if not root.is_dir():
        raise DataError(f"fashion-mnist: data root {root} does not exist; {_FASHION_HINT}")
    train_source, test_source = _fashion_part(root, "train"), _fashion_part(root, "t10k")
    return _official_test_split(req, train_source, test_source, FASHION_CLASSES)


@DATASETS.register("cifar100")
def _cifar100(req: DatasetRequest) -> DataSplits:
    """CIFAR-100 through torchvision (held in memory); val split off the official train set."""
    _options(req, {})
    root = req.root or Path(CACHE_ROOT).expanduser()
    expected = root / "cifar-100-python"
    how = (f"place the contents of cifar-100-python.tar.gz extracted there (so that "
           f"{expected}/train exists) or pass --download where there is internet")
    if not req.download and not expected.is_dir():
        raise DataError(f"cifar100: files not found in {expected}/; {how}")
    try:
        from torchvision.datasets import CIFAR100

        sets = [CIFAR100(str(root), train=flag, download=req.download) for flag in (True, False)]
    except Exception as exc:  # torchvision reports missing/corrupt files and offline downloads variously
        raise DataError(f"cifar100: could not load {expected}/ ({_one_line(exc)}); {how}") from exc
    train_source, test_source = [
        (torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets))
        for s in sets]
    return _official_test_split(req, train_source, test_source,
                                tuple(sets[0].classes))



@DATASETS.register("synthetic")
def _synthetic(req: DatasetRequest) -> DataSplits:
    """Seeded class prototypes plus Gaussian noise, learnable in seconds; for tests and smoke runs.

    Options: ``num_classes`` (10), ``size`` (8), ``num_examples`` (512), ``channels_native`` (3).
    """
    opts = _options(req, {"num_classes": 10, "size": 8, "num_examples": 512, "channels_native": 3})
    bounds = {"num_classes": 2, "size": 4, "num_examples": 2 * opts["num_classes"], "channels_native": 1}
    for key, low in bounds.items():
        if not _is_int(opts[key]) or opts[key] < low:
            raise ConfigError(f"synthetic: option {key} must be an integer >= {low}, got {opts[key]!r}")
    if opts["channels_native"] not in (1, 3):
        raise ConfigError(f"synthetic: option channels_native must be 1 or 3, got {opts['channels_native']}")
    gen = torch.Generator().manual_seed(req.seed)
    k, c, s, n = opts["num_classes"], opts["channels_native"], opts["size"], opts["num_examples"]
    prototypes = torch.rand(k, c, s, s, generator=gen)
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    noise = 0.25 * torch.randn(n, c, s, s, generator=gen)
    source = ((prototypes[labels] + noise).clamp_(0, 1), labels)
    parts = _split(req, labels, gen, {"test": req.test_fraction, "val": req.val_fraction})
    parts["train"] = _limit(req, labels, parts["train"], gen)
    return _in_memory(req, {p: _gather(source, i) for p, i in parts.items()}, scale=1.0,
                      class_names=tuple(f"class{i}" for i in range(k)))
