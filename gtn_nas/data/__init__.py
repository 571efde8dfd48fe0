"""Datasets (common floor): a name becomes seeded train/val/test splits.

``core``: the request, the splits, the in-memory dataset, :func:`load_dataset` and loaders;
``sources``: the in-memory datasets (digits, fashion-mnist, cifar100, synthetic); ``folders``:
image folders read through PIL. Importing this package registers every source; installed
packages add datasets through the entry-point group ``gtn_nas.datasets``.

May import: ``gtn_nas.errors`` and ``gtn_nas.registry`` only.
"""

from gtn_nas.data import folders, sources  # noqa: F401  (registers the datasets)
from gtn_nas.data.core import (CACHE_ROOT, DATASETS, ENTRY_POINT_GROUP, FASHION_CLASSES,
                               FASHION_MNIST_ROOT, DatasetRequest, DataSplits, InMemoryImages,
                               data_cache_root, dataset_names, load_dataset, make_loaders)
from gtn_nas.data.folders import ImageFiles

__all__ = ["CACHE_ROOT", "DATASETS", "ENTRY_POINT_GROUP", "FASHION_CLASSES", "FASHION_MNIST_ROOT",
           "DataSplits", "DatasetRequest", "ImageFiles", "InMemoryImages", "data_cache_root",
           "dataset_names", "load_dataset", "make_loaders"]
