"""Datasets (common floor): a name becomes seeded train/val/test splits (``core``)."""

from gtn_nas.data.core import (CACHE_ROOT, DATASETS, FASHION_CLASSES, FASHION_MNIST_ROOT,
                               DatasetRequest, DataSplits, ImageFiles, InMemoryImages,
                               dataset_names, load_dataset, make_loaders)

__all__ = ["CACHE_ROOT", "DATASETS", "FASHION_CLASSES", "FASHION_MNIST_ROOT", "DataSplits",
           "DatasetRequest", "ImageFiles", "InMemoryImages", "dataset_names", "load_dataset",
           "make_loaders"]
