"""Image folders (``imagefolder``): files read lazily through PIL, ImageNet-normalised.

Registers ``imagefolder`` in :data:`gtn_nas.data.core.DATASETS`; :mod:`gtn_nas.data` imports
this module so that :func:`gtn_nas.data.load_dataset` knows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gtn_nas.data.core import (_IMAGENET_MEAN, _IMAGENET_STD, _LUMA, DATASETS, DataSplits,
                               DatasetRequest, _augmentation, _limit, _one_line, _options,
                               _resize, _split, _to_channels)
from gtn_nas.errors import ConfigError, DataError

_log = logging.getLogger(__name__)

class _FilePipeline:
    """PIL image -> float tensor with channel/size adaptation, normalisation and augmentation."""

    def __init__(self, size: int, channels: int, augment: Callable[[Tensor], Tensor] | None) -> None:
        self.size, self.channels, self.augment = size, channels, augment
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        if channels == 1:
            mean = (sum(w * m for w, m in zip(_LUMA, mean)),)
            std = (sum(w * s for w, s in zip(_LUMA, std)),)  # channels ~perfectly correlated
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: Any) -> Tensor:
        from torchvision.transforms.v2.functional import pil_to_tensor

        x = _to_channels(pil_to_tensor(image).float().div_(255).unsqueeze(0), self.channels)
        x = ((_resize(x, self.size)[0]) - self.mean) / self.std
        return self.augment(x) if self.augment is not None else x


BAD_IMAGE_POLICIES = ("stop", "skip")
"""What a corrupt image does during training: ``stop`` (one line naming it; the default) or
``skip`` (the next readable image of the split takes its place, said once per file)."""


class ImageFiles(Dataset):
    """A split of image files read lazily through PIL (used by ``imagefolder``).

    A file PIL cannot decode stops the run with one line naming it (``on_bad_image="stop"``),
    or is replaced by the next readable file of the split (``"skip"``): the split keeps its
    length, so batches, shards and seeds stay as they were.
    """

    def __init__(self, name: str, samples: list[tuple[str, int]], transform: _FilePipeline,
                 on_bad_image: str = "stop") -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"{name}: on_bad_image must be one of "
                              f"{', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
        self.name, self.samples, self.transform = name, samples, transform
        self.on_bad_image = on_bad_image
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        self.indices = torch.arange(len(samples))
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Any:
        from PIL import Image, UnidentifiedImageError
        from torchvision.datasets.folder import default_loader

        path = self.samples[index][0]
        try:
            return default_loader(path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            # DecompressionBombError: a corrupt header claiming an absurd size (not an OSError)
            if self.on_bad_image == "stop":
                raise DataError(f"{self.name}: cannot read image {path} ({_one_line(exc)}); "
                                f"remove or replace the file, or pass --on-bad-image skip") \
                    from exc
            if path not in self._reported:
                self._reported.add(path)
                _log.warning("%s: skipping unreadable image %s (%s)", self.name, path,
                             _one_line(exc))
            return None

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for offset in range(len(self.samples)):
            position = (index + offset) % len(self.samples)
            image = self._load(position)
            if image is not None:
                return self.transform(image), self.samples[position][1]
        raise DataError(f"{self.name}: no readable image in this split "
                        f"({len(self.samples)} files)")



def _scan_folder(folder: Path, layout: str) -> tuple[list[tuple[str, int]], list[str]]:
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"imagefolder: no usable class folders in {folder} ({_one_line(exc)}); "
                        f"{layout}") from exc
    return list(found.samples), list(found.classes)


def _empty_files(samples: list[tuple[str, int]]) -> list[str]:
    """Zero-byte files among ``samples`` (found up front, before any training)."""
    empty = []
    for path, _ in samples:
        try:
            if os.path.getsize(path) == 0:
                empty.append(path)
        except OSError:
            empty.append(path)
    return empty


@DATASETS.register("imagefolder")
def _imagefolder(req: DatasetRequest) -> DataSplits:
    """``root/train/<class>/*`` (+ optional ``val``/``test``) read lazily; default size 32.

    Missing splits are carved deterministically (seeded, stratified): without ``test/`` the test
    split comes from ``val/`` (share ``test_fraction / (val_fraction + test_fraction)``); without
    ``val/`` the val split (and, if also missing, the test split) comes from ``train/``.
    """
    policy = req.options.get("on_bad_image", "stop")
    _options(req, {"on_bad_image": 0})
    layout = ("expected <root>/train/<class>/<image> and optionally <root>/val/<class>/<image> "
              "and <root>/test/<class>/<image>; pass --data-root")
    if req.root is None:
        raise DataError(f"imagefolder: no data root given; {layout}")
    if not req.root.is_dir():
        raise DataError(f"imagefolder: data root {req.root} does not exist; {layout}")
    if not (req.root / "train").is_dir():
        raise DataError(f"imagefolder: {req.root / 'train'} does not exist; {layout}")
    train, classes = _scan_folder(req.root / "train", layout)
    found = {"train": train}
    for part in ("val", "test"):
        if (req.root / part).is_dir():
            found[part], part_classes = _scan_folder(req.root / part, layout)
            if part_classes != classes:
                only_train = sorted(set(classes) - set(part_classes)) or ["-"]
                only_part = sorted(set(part_classes) - set(classes)) or ["-"]
                raise DataError(f"imagefolder: class folders differ between {req.root / 'train'} and "
                                f"{req.root / part} (only in train: {', '.join(only_train)}; "
                                f"only in {part}: {', '.join(only_part)}); {layout}")
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"imagefolder: on_bad_image must be one of "
                          f"{', '.join(BAD_IMAGE_POLICIES)}, got {policy!r}")
    for part, samples in found.items():
        empty = _empty_files(samples)
        if empty and policy == "stop":
            more = f" (+{len(empty) - 1} more)" if len(empty) > 1 else ""
            raise DataError(f"imagefolder: {empty[0]} is empty (0 bytes){more}; remove or "
                            f"replace it, or pass --on-bad-image skip")
        if empty:
            _log.warning("imagefolder: leaving out %d empty file(s) of %s, e.g. %s", len(empty),
                         part, empty[0])
            dropped = set(empty)
            found[part] = [sample for sample in samples if sample[0] not in dropped]
    gen = torch.Generator().manual_seed(req.seed)

    def labels_of(samples: list[tuple[str, int]]) -> Tensor:
        return torch.tensor([label for _, label in samples], dtype=torch.long)

    def carve(source: str, fractions: dict[str, float], rest: str) -> None:
        samples = found.pop(source)
        for part, idx in _split(req, labels_of(samples), gen, fractions, rest).items():
            found[part] = [samples[i] for i in idx.tolist()]

    if "test" not in found and "val" in found:
        share = req.test_fraction / (req.val_fraction + req.test_fraction)
        carve("val", {"test": share}, rest="val")
    wanted = {p: getattr(req, f"{p}_fraction") for p in ("test", "val") if p not in found}
    if wanted:
        carve("train", wanted, rest="train")
    labels = labels_of(found["train"])
    keep = _limit(req, labels, torch.arange(len(labels)), gen).tolist()
    found["train"] = [found["train"][i] for i in keep]
    size = req.image_size or 32
    datasets = {part: ImageFiles(req.name, samples, _FilePipeline(
        size, req.channels, _augmentation(req, size, True) if part == "train" else None),
        on_bad_image=policy) for part, samples in found.items()}
    return DataSplits(req.name, datasets["train"], datasets["val"], datasets["test"],
                      len(classes), req.channels, size, tuple(classes))
