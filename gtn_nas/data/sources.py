"""The in-memory datasets: ``digits`` (scikit-learn's, shipped in its wheel),
``fashion-mnist`` (IDX files: Debian's dataset-fashion-mnist, or torchvision's download),
``cifar100`` (torchvision's files) and ``synthetic`` (seeded prototypes + noise).

Where the files come from, without ``--data-root``: Fashion-MNIST is read from Debian's package
(:data:`~gtn_nas.data.core.FASHION_MNIST_ROOT`) when it is installed, else from the data cache
(:func:`~gtn_nas.data.core.data_cache_root`); CIFAR-100 from the data cache. With
``download=True`` a missing dataset is fetched there (or into ``--data-root``) by torchvision's
own downloaders (``torchvision.datasets.FashionMNIST``/``CIFAR100``, which check each file's
MD5); without it, a missing dataset is one line saying how to get it. IDX files are parsed
here; CIFAR-100's files are pickles, which torchvision unpickles only after their MD5 matched
the official release's, so a foreign file is refused, never run.

Each registers itself in :data:`gtn_nas.data.core.DATASETS`; :mod:`gtn_nas.data` imports this
module so that :func:`gtn_nas.data.load_dataset` knows them.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from gtn_nas.data import core
from gtn_nas.data.core import (_FASHION_HINT, DATASETS, FASHION_CLASSES, DataSplits,
                               DatasetRequest, _gather, _in_memory, _is_int, _limit, _one_line,
                               _options, _split, _squashed, data_cache_root)
from gtn_nas.errors import ConfigError, DataError

FASHION_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files of Fashion-MNIST (each also read as ``<stem>.gz``)."""


@contextlib.contextmanager
def _download_lock(root: Path, what: str) -> Iterator[None]:
    """One download per folder at a time: a second process waits, then finds the files."""
    import fcntl

    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / f".{what}.download.lock", "a")
    except OSError as exc:
        raise DataError(f"{what}: cannot write to {root} ({exc.strerror or exc}); choose "
                        f"another --data-root") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

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


def _fashion_folders(root: Path) -> list[Path]:
    """Where IDX files are looked for under ``root``: itself (Debian's layout), then
    torchvision's ``FashionMNIST/raw``."""
    return [root, root / "FashionMNIST" / "raw"]


def _has_fashion(folder: Path) -> bool:
    """Whether each of the four IDX files is in ``folder`` (either layout, ``.gz`` or not)."""
    return all(any((where / f"{stem}{suffix}").is_file() for where in _fashion_folders(folder)
                   for suffix in (".gz", "")) for stem in FASHION_STEMS)


def _fashion_part(root: Path, stem: str) -> tuple[Tensor, Tensor]:
    folders = _fashion_folders(root)
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
    root = _fashion_root(req)
    train_source, test_source = _fashion_part(root, "train"), _fashion_part(root, "t10k")
    return _official_test_split(req, train_source, test_source, FASHION_CLASSES)


def _fashion_root(req: DatasetRequest) -> Path:
    """The folder to read: ``--data-root``, else Debian's package when installed, else the data
    cache; with ``download`` torchvision fetches what a root or the cache lacks."""
    system = Path(core.FASHION_MNIST_ROOT)
    if req.root is None and _has_fashion(system):
        return system
    root = req.root or data_cache_root()
    flat = all(any((root / f"{stem}{suffix}").is_file() for suffix in (".gz", ""))
               for stem in FASHION_STEMS)
    if req.download and not flat:  # torchvision's layout: it skips files whose MD5 matches
        _download_fashion(root)
    elif req.root is not None:
        if not root.is_dir():
            raise DataError(f"fashion-mnist: data root {root} does not exist; {_FASHION_HINT}")
    elif not _has_fashion(root):
        raise DataError(
            f"fashion-mnist: not found in {system} (Debian's dataset-fashion-mnist) nor in "
            f"{root / 'FashionMNIST' / 'raw'}; pass --download to fetch it with torchvision "
            f"into {root} (needs internet), apt-get install dataset-fashion-mnist, or pass "
            f"--data-root DIR holding the IDX files")
    return root


def _download_fashion(root: Path) -> None:
    """torchvision's own download of the four files into ``root/FashionMNIST/raw``."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError as exc:
        raise DataError(f"fashion-mnist: torchvision is not installed, so --download cannot "
                        f"fetch it; pip install torchvision, or {_FASHION_HINT}") from exc
    with _download_lock(root, "fashion-mnist"):
        try:
            FashionMNIST(str(root), train=True, download=True)
        except Exception as exc:  # offline (URLError), a checksum mismatch, a full disk ...
            raise DataError(
                f"fashion-mnist: could not download into {root / 'FashionMNIST' / 'raw'} "
                f"({_squashed(exc)}); check the internet connection and run again, apt-get "
                f"install dataset-fashion-mnist, or pass --data-root DIR holding the IDX "
                f"files") from exc


@DATASETS.register("cifar100")
def _cifar100(req: DatasetRequest) -> DataSplits:
    """CIFAR-100 through torchvision (held in memory); val split off the official train set."""
    _options(req, {})
    root = req.root or data_cache_root()
    expected = root / "cifar-100-python"
    how = (f"pass --download to fetch it with torchvision into {root} (161 MB, needs "
           f"internet), extract cifar-100-python.tar.gz there (so that {expected}/train "
           f"exists), or pass --data-root DIR holding cifar-100-python/")
    if not req.download and not expected.is_dir():
        raise DataError(f"cifar100: files not found in {expected}/; {how}")
    try:
        from torchvision.datasets import CIFAR100
    except ImportError as exc:
        raise DataError("cifar100: torchvision is not installed; pip install torchvision") \
            from exc
    lock = _download_lock(root, "cifar100") if req.download else contextlib.nullcontext()
    with lock:
        try:
            # torchvision checks each file's MD5 before it unpickles it (and downloads only
            # what is missing or damaged)
            sets = [CIFAR100(str(root), train=flag, download=req.download)
                    for flag in (True, False)]
        except Exception as exc:  # missing/corrupt files and offline downloads, variously
            if req.download:
                raise DataError(f"cifar100: could not download into {root} ({_squashed(exc)}"
                                f"); check the internet connection and run again, or extract "
                                f"cifar-100-python.tar.gz there") from exc
            raise DataError(f"cifar100: could not load {expected}/ ({_one_line(exc)}); "
                            f"{how}") from exc
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
