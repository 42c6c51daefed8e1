"""Datasets and augmentation for training: built-in ``lfw`` / ``digits``, ImageFolder folders, and
per-image Keras-style augmentation on torchvision transforms v2.

Example:
    >>> from convlens.data import load_dataset, Augment
    >>> ds = load_dataset("lfw", image_size=32)
    >>> ds.train.with_augment(Augment(rotation=20))[0][0].shape
    torch.Size([3, 32, 32])
"""

from convlens.data.augment import (
    DEFAULT_AUGMENT,
    FILL_MODES,
    Augment,
    AugmentParams,
    KerasAugment,
    augment_for,
    default_augment,
    parse_augment_options,
    sample_seed,
)
from convlens.data.datasets import (
    BUILTIN_DATASETS,
    DatasetSplit,
    ImageDataset,
    SkippedFile,
    load_dataset,
    stratified_split,
    to_tensor_images,
)

__all__ = [
    "FILL_MODES",
    "Augment",
    "AugmentParams",
    "KerasAugment",
    "parse_augment_options",
    "augment_for",
    "default_augment",
    "DEFAULT_AUGMENT",
    "sample_seed",
    "BUILTIN_DATASETS",
    "DatasetSplit",
    "ImageDataset",
    "SkippedFile",
    "load_dataset",
    "stratified_split",
    "to_tensor_images",
]
