"""Models: a registry, ``load_model``, preprocessing and safe weights (see :mod:`convlens.models.registry`).

Example:
    >>> from convlens.models import load_model
    >>> load_model("efficientnet_lite0").meta.input_size
    (3, 224, 224)
"""

from convlens.models import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers the embedded model)
from convlens.models.catalog import ModelCatalog, ModelSource, model_catalog
from convlens.models.logits import logits
from convlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from convlens.models.registry import (
    ModelBundle,
    ModelMeta,
    bundle_from_module,
    imagenet_labels,
    list_model_sources,
    list_models,
    load_model,
    load_weights_into,
    random_weights_message,
    register_model,
)
from convlens.models.weights import read_state_dict

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocess",
    "ModelBundle",
    "ModelMeta",
    "bundle_from_module",
    "imagenet_labels",
    "list_models",
    "list_model_sources",
    "model_catalog",
    "ModelCatalog",
    "ModelSource",
    "load_model",
    "load_weights_into",
    "random_weights_message",
    "logits",
    "read_state_dict",
    "register_model",
]
