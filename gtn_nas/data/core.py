"""Image-classification datasets: one call turns a dataset name into seeded train/val/test splits.

:func:`load_dataset` looks a name up in :data:`DATASETS`, validates the request and returns a
:class:`DataSplits` whose three datasets yield ``(float image tensor [C, H, W], int label)``.
Every split is a pure function of (dataset, seed, fractions, limit); only the train-time
augmentation (random crop with padding ``image_size // 8`` and, except for ``digits``, a random
horizontal flip) draws from torch's global RNG, which seeded loaders make reproducible.

Shared behaviour:

* channels: grayscale is repeated to 3 channels, RGB becomes ITU-R 601 luminance for 1 channel;
* size: bilinear (antialiased) resize to ``image_size``; the default is the native size
  (``imagefolder``: 32);
* normalisation: per-channel mean/std of the *training split* (after ``limit``) for the in-memory
  datasets (``digits``, ``fashion-mnist``, ``cifar100``, ``synthetic``; for ``cifar100`` this is
  the usual 0.507/0.487/0.441 +- 0.267/0.256/0.276), ImageNet constants for ``imagefolder``;
  val/test use the same constants. Crop padding is filled with 0, i.e. the mean.

Example:
    >>> from gtn_nas.data import load_dataset   # the package registers every source
    >>> splits = load_dataset("digits", seed=0)
    >>> image, label = splits.val[0]
    >>> tuple(image.shape), splits.num_classes
    ((3, 8, 8), 10)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gtn_nas.errors import ConfigError, DataError
from gtn_nas.registry import Registry


_log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gtn_nas.datasets"
"""Entry-point group of dataset plugins: each names a loader ``(DatasetRequest) -> DataSplits``."""

DATASETS: Registry[Callable[["DatasetRequest"], "DataSplits"]] = Registry("dataset",
                                                                           ENTRY_POINT_GROUP)
"""Dataset loaders by name; each takes a :class:`DatasetRequest` and returns :class:`DataSplits`
(built-ins register in code; installed packages through :data:`ENTRY_POINT_GROUP`)."""

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's dataset-fashion-mnist puts the IDX files (read first when present)."""
CACHE_ROOT = "~/.cache/gtn-nas/data"
"""The data cache without ``XDG_CACHE_HOME``; :func:`data_cache_root` is the one in use."""
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_LUMA = (0.299, 0.587, 0.114)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_FASHION_HINT = ("pass --download (torchvision fetches it; needs internet), install Debian's "
                 "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass "
                 "--data-root DIR holding the IDX files")


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one dataset plus what a model needs to know about its input."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetRequest:
    """The validated arguments of :func:`load_dataset`, as handed to a registered loader."""

    name: str
    root: Path | None
    image_size: int | None
    channels: int
    val_fraction: float
    test_fraction: float
    seed: int
    augment: bool
    download: bool
    limit: int | None
    options: Mapping[str, Any] = field(default_factory=dict)


class _RandomCropFlip:
    """Random crop of the original size from a zero-padded image, then an optional random flip."""

    def __init__(self, padding: int, flip: bool) -> None:
        self.padding, self.flip = padding, flip

    def __call__(self, x: Tensor) -> Tensor:
        p, (h, w) = self.padding, x.shape[-2:]
        i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = F.pad(x, (p, p, p, p))[..., i:i + h, j:j + w]
        if self.flip and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return x


class InMemoryImages(Dataset):
    """A split held as one normalised float tensor; items are cheap views (no PIL round trip).

    Attributes:
        images: ``[N, c, H, W]`` normalised images (``c`` is 1 when grayscale is repeated lazily).
        labels: ``[N]`` int64 labels.
        indices: ``[N]`` positions of the items in their source (for disjointness checks).
        mean, std: the per-channel normalisation constants that were applied.
    """

    def __init__(self, images: Tensor, labels: Tensor, indices: Tensor, channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...],
                 augment: Callable[[Tensor], Tensor] | None = None) -> None:
        self.images, self.labels, self.indices = images, labels, indices
        self.channels, self.mean, self.std, self.augment = channels, mean, std, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        return image.expand(self.channels, -1, -1).clone(), int(self.labels[index])


def data_cache_root() -> Path:
    """Where downloaded datasets go by default: ``$XDG_CACHE_HOME/gtn-nas/data``, else
    ``~/.cache/gtn-nas/data`` (a relative ``XDG_CACHE_HOME`` is ignored, as the XDG spec says).

    Example:
        >>> data_cache_root().parts[-2:]
        ('gtn-nas', 'data')
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "gtn-nas" / "data"
    return Path(CACHE_ROOT).expanduser()


def dataset_names() -> list[str]:
    """Names of all registered datasets, sorted.

    Example:
        >>> "digits" in dataset_names()
        True
    """
    return DATASETS.names()


def load_dataset(name: str, *, root: str | os.PathLike | None = None, image_size: int | None = None,
                 channels: int = 3, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, augment: bool = True, download: bool = False,
                 limit: int | None = None, **options: Any) -> DataSplits:
    """Loads a registered dataset as seeded, stratified train/val/test splits.

    Args:
        name: A name from :func:`dataset_names` (unknown names raise ``ConfigError``).
        root: Where the files are; each dataset has its own default.
        image_size: Side of the square images models receive (>= 4); default: native size.
        channels: 1 or 3 channels after adaptation.
        val_fraction: Share split off for validation (of all data, or of the official train set).
        test_fraction: Share split off for testing where there is no official test set.
        seed: Decides the splits, ``limit`` and synthetic data.
        augment: Random crop (and flip) on the train split.
        download: Let torchvision download a missing ``fashion-mnist`` or ``cifar100`` (into
            ``root``, default :func:`data_cache_root`; needs internet).
        limit: Keep at most this many training examples (seeded, stratified).
        **options: Per-dataset extras, e.g. ``synthetic``'s ``num_classes``/``size``/``num_examples``.

    Returns:
        The splits with ``num_classes``, ``in_channels``, ``image_size`` and ``class_names``.

    Raises:
        ConfigError: Unknown name, option or malformed argument.
        DataError: Missing or unreadable data.

    Example:
        >>> splits = load_dataset("synthetic", num_classes=4, size=8, num_examples=64, seed=1)
        >>> splits.num_classes, len(splits.train) + len(splits.val) + len(splits.test)
        (4, 64)
    """
    loader = DATASETS.get(name)
    if image_size is not None and (not _is_int(image_size) or image_size < 4):
        raise ConfigError(f"{name}: image_size must be an integer >= 4, got {image_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"{name}: channels must be 1 or 3, got {channels!r}")
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{name}: {label} must be a number strictly between 0 and 1, got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"{name}: val_fraction + test_fraction must be below 1, "
                          f"got {val_fraction} + {test_fraction}")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(f"{name}: limit must be a positive integer or None, got {limit!r}")
    if not _is_int(seed):
        raise ConfigError(f"{name}: seed must be an integer, got {seed!r}")
    request = DatasetRequest(
        name=name, root=Path(root).expanduser().absolute() if root is not None else None,
        image_size=image_size, channels=channels, val_fraction=float(val_fraction),
        test_fraction=float(test_fraction), seed=seed, augment=bool(augment),
        download=bool(download), limit=limit, options=dict(options))
    splits = loader(request)
    _log.info("%s: %d train / %d val / %d test, %d classes, images [%d, %d, %d]", name,
              len(splits.train), len(splits.val), len(splits.test), splits.num_classes,
              splits.in_channels, splits.image_size, splits.image_size)
    return splits


def make_loaders(splits: DataSplits, batch_size: int, *, seed: int = 0, num_workers: int = 0,
                 drop_last: bool = False) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Builds train/val/test loaders; the train order comes from a generator seeded by ``seed``.

    Args:
        splits: What :func:`load_dataset` returned.
        batch_size: Examples per batch (>= 1).
        seed: Seeds the train shuffling (and the worker seeds, hence augmentation in workers).
        num_workers: Loader worker processes (0: load in the calling process).
        drop_last: Drop the last incomplete train batch.

    Returns:
        ``(train, val, test)`` loaders yielding ``float32 [B, C, H, W]`` and ``int64 [B]``.

    Example:
        >>> train, val, test = make_loaders(load_dataset("digits"), 32)
        >>> images, labels = next(iter(val))
        >>> tuple(images.shape), labels.dtype
        ((32, 3, 8, 8), torch.int64)
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not _is_int(num_workers) or num_workers < 0:
        raise ConfigError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if drop_last and batch_size > len(splits.train):
        raise ConfigError(f"{splits.name}: batch_size {batch_size} exceeds the {len(splits.train)} "
                          f"training examples with drop_last; lower batch_size")
    common: dict[str, Any] = dict(batch_size=batch_size, num_workers=num_workers,
                                  persistent_workers=num_workers > 0)
    train = DataLoader(splits.train, shuffle=True, drop_last=drop_last,
                       generator=torch.Generator().manual_seed(seed), **common)
    return train, DataLoader(splits.val, **common), DataLoader(splits.test, **common)


# --------------------------------------------------------------------------- shared helpers

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _squashed(exc: BaseException, limit: int = 300) -> str:
    """Every line of ``exc`` joined into one (a download error lists each mirror it tried)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _options(req: DatasetRequest, defaults: dict[str, int]) -> dict[str, int]:
    unknown = sorted(set(req.options) - set(defaults))
    if unknown:
        raise ConfigError(f"{req.name}: unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(defaults)) or 'none'}")
    return {**defaults, **req.options}


def _to_channels(x: Tensor, channels: int) -> Tensor:
    """``[N, C, H, W]`` -> luminance when ``channels == 1``; grayscale stays 1 (repeated lazily)."""
    if x.shape[1] == 3 and channels == 1:
        return torch.einsum("nchw,c->nhw", x, torch.tensor(_LUMA, dtype=x.dtype)).unsqueeze(1)
    return x


def _resize(x: Tensor, size: int) -> Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return torch.cat([F.interpolate(chunk, size=(size, size), mode="bilinear",
                                    align_corners=False, antialias=True) for chunk in x.split(4096)])


def _stratified_order(labels: Tensor, gen: torch.Generator) -> Tensor:
    """A seeded permutation whose every prefix holds the classes in (nearly) their proportions."""
    keys = torch.empty(len(labels), dtype=torch.float64)
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        offset = torch.rand(1, generator=gen, dtype=torch.float64)
        keys[members] = (torch.arange(len(members), dtype=torch.float64) + offset) / len(members)
    return torch.argsort(keys, stable=True)


def _split(req: DatasetRequest, labels: Tensor, gen: torch.Generator,
           fractions: dict[str, float], rest: str = "train") -> dict[str, Tensor]:
    """Splits positions ``0..len(labels)-1`` into the named fractions plus ``rest`` (stratified)."""
    order, start, parts = _stratified_order(labels, gen), 0, {}
    for part, fraction in [*fractions.items(), (rest, None)]:
        count = len(labels) - start if fraction is None else int(round(len(labels) * fraction))
        parts[part] = order[start:start + count].sort().values
        start += count
        if count == 0:
            hint = f"raise {part}_fraction" if fraction is not None else "lower the fractions"
            raise DataError(f"{req.name}: the {part} split of {len(labels)} examples would be "
                            f"empty; {hint} or use more data")
    return parts


def _limit(req: DatasetRequest, labels: Tensor, train: Tensor, gen: torch.Generator) -> Tensor:
    if req.limit is None or req.limit >= len(train):
        return train
    return train[_stratified_order(labels[train], gen)[:req.limit]].sort().values


def _augmentation(req: DatasetRequest, size: int, flip: bool) -> _RandomCropFlip | None:
    return _RandomCropFlip(max(1, size // 8), flip) if req.augment else None


def _in_memory(req: DatasetRequest, parts: dict[str, tuple[Tensor, Tensor, Tensor]], *,
               scale: float, class_names: tuple[str, ...], flip: bool = True) -> DataSplits:
    """Adapts, normalises (train statistics) and wraps ``{split: (images, labels, indices)}``."""
    size = req.image_size or parts["train"][0].shape[-1]
    images = {k: _resize(_to_channels(x.to(torch.float32) / scale, req.channels), size)
              for k, (x, _, _) in parts.items()}
    flat = images["train"].transpose(0, 1).reshape(images["train"].shape[1], -1)
    mean, std = flat.mean(dim=1), flat.std(dim=1).clamp_min(1e-6)
    stats = (tuple(mean.tolist()), tuple(std.tolist()))
    datasets = {}
    for k, (_, labels, indices) in parts.items():
        x = (images[k] - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        augment = _augmentation(req, size, flip) if k == "train" else None
        datasets[k] = InMemoryImages(x, labels.long(), indices, req.channels, *stats, augment=augment)
    return DataSplits(req.name, datasets["train"], datasets["val"], datasets["test"],
                      len(class_names), req.channels, size, class_names)


def _gather(source: tuple[Tensor, Tensor], indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return source[0][indices], source[1][indices], indices
