"""The model catalog as one core call: :func:`model_catalog` lists the models ``load_model`` can build
that match a pattern, each with its library and the name that loads it (``convlens models --json``
prints :meth:`ModelCatalog.to_dict`).

Example:
    >>> c = model_catalog("resnet18")
    >>> [(s.name, s.source, s.load_as) for s in c.sources if s.name == "resnet18"]
    [('resnet18', 'torchvision', 'resnet18'), ('resnet18', 'timm', 'timm:resnet18')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convlens.errors import InputError
from convlens.models.registry import list_model_sources, load_name
from convlens.serialize import to_jsonable

__all__ = ["ModelSource", "ModelCatalog", "model_catalog"]


@dataclass(frozen=True)
class ModelSource:
    """One model of one library, and the name ``load_model`` builds it by (bare where that library
    owns the bare name, else ``source:name``)."""

    name: str
    source: str
    load_as: str


@dataclass(frozen=True)
class ModelCatalog:
    """``models``: the matching names, each once (convlens's own first, then torchvision, then timm);
    ``sources``: one row per (name, library)."""

    models: list[str]
    sources: list[ModelSource]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


def model_catalog(pattern: str = "*", *, source: str | None = None) -> ModelCatalog:
    """The models matching ``pattern`` (a glob like ``resnet*`` or a substring; it may start with
    ``timm:`` or ``torchvision:``), optionally from one ``source`` (:func:`list_model_sources`).

    Raises:
        InputError: nothing matches.

    Example:
        >>> model_catalog("efficientnet_lite0", source="convlens").models
        ['efficientnet_lite0']
    """
    pairs = list_model_sources(pattern, source=source)
    if not pairs:
        where = f" from {source}" if source else ""
        raise InputError(
            f"no model{where} matches '{pattern}'; a plain word matches as a substring, "
            "a glob like 'resnet*' as a glob (`convlens models` lists all)."
        )
    return ModelCatalog(
        list(dict.fromkeys(n for n, _ in pairs)), [ModelSource(n, src, load_name(n, src)) for n, src in pairs]
    )
