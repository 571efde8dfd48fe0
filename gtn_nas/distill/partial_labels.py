"""Training sets where only some images keep their labels (many images, few labels).

A real use of distillation: a strong teacher exists, and the deployment's students have many
images but labels for few of them. The student's cross-entropy sees the labelled images; the
distillation term sees every image (the teacher labels the rest softly). An unlabelled item's
target is :data:`UNLABELLED` (-100, ``F.cross_entropy``'s ignore index); losses use
:func:`gtn_nas.distill.losses.labelled_cross_entropy` and the engine's accuracies skip such items.

The labelled images are exactly those a run with ``limit=labelled`` trains on (the stratified
order of :func:`gtn_nas.data.load_dataset` makes every smaller limit a prefix of a larger one),
so a teacherless baseline trained on them sees the same labels as the distilled student.

Example:
    >>> from gtn_nas.data import load_dataset
    >>> few = load_dataset("digits", limit=100, seed=0).train
    >>> many = load_dataset("digits", limit=400, seed=0).train
    >>> mixed = partially_labelled(many, few)
    >>> len(mixed), mixed.num_labelled, mixed[0][1] in (UNLABELLED, int(many.labels[0]))
    (400, 100, True)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gtn_nas.errors import ConfigError

UNLABELLED = -100
"""The target of an image without a label (``F.cross_entropy``'s default ignore index)."""


class PartiallyLabelled(Dataset):
    """``dataset`` whose items outside ``mask`` have the target :data:`UNLABELLED`."""

    def __init__(self, dataset: Dataset, mask: Tensor) -> None:
        if len(mask) != len(dataset):  # type: ignore[arg-type]
            raise ValueError("the mask must have one entry per item")
        self.dataset, self.mask = dataset, mask.bool()
        self.num_labelled = int(self.mask.sum())

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x, y = self.dataset[index]
        return x, (int(y) if self.mask[index] else UNLABELLED)


def partially_labelled(train: Dataset, labelled: Dataset) -> PartiallyLabelled:
    """``train`` with labels kept only on the images of ``labelled`` (a subset of it, matched
    by source position).

    Raises:
        ConfigError: a dataset that does not record its items' source positions, or a
            ``labelled`` set that is not a subset of ``train``.
    """
    from gtn_nas.data import InMemoryImages

    # only in-memory splits record their items' positions in the source (ImageFolder's
    # ``indices`` number the kept files, which a smaller limit renumbers)
    if not (isinstance(train, InMemoryImages) and isinstance(labelled, InMemoryImages)):
        raise ConfigError("--labelled needs an in-memory dataset (digits, fashion-mnist, "
                          "cifar100, synthetic), not one read from files")
    mask = torch.isin(train.indices, labelled.indices)
    if int(mask.sum()) != len(labelled.indices):
        raise ConfigError("the labelled images are not all among the training images; give "
                          "--limit larger than --labelled (or none)")
    return PartiallyLabelled(train, mask)
