"""Model registry: one entry point, ``load_model``, for every model convlens can use.

Resolution order of a name:

1. convlens's own registry (``@register_model``; e.g. the embedded, pretrained ``efficientnet_lite0``);
2. ``path/to/file.py:factory`` -- a user's Python file and a callable in it returning an ``nn.Module``;
   ``path/to/model.keras`` -- a Keras 3 model, run on Keras's torch backend (:mod:`convlens.models.keras_adapter`);
3. a torchvision classification model name (``resnet18``, ``vgg16``, ``googlenet``, ...);
4. a timm model name.

Models from 2-4 start from random init unless ``weights=PATH`` names a local weights file
(:func:`convlens.models.weights.read_state_dict`: safetensors, or a pickle loaded with
``weights_only=True``). A ``PATH.json`` beside it (written by ``convlens train``) supplies the class
labels and the image size the model was trained at. Nothing is ever downloaded.

Example:
    >>> b = load_model("resnet18")
    >>> b.meta.name, b.meta.num_classes, b.model.training
    ('resnet18', 1000, False)
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.errors import ModelError, RandomWeightsWarning
from convlens.models.preprocess import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess
from convlens.models.weights import read_state_dict

__all__ = [
    "ModelMeta",
    "ModelBundle",
    "register_model",
    "list_models",
    "list_model_sources",
    "split_source",
    "load_name",
    "SOURCES",
    "load_model",
    "imagenet_labels",
    "load_weights_into",
    "random_weights_message",
]


@dataclass(frozen=True)
class ModelMeta:
    """Plain data about a model: where it came from, its input, its classes and its size."""

    name: str
    source: str  # 'convlens' | 'file' | 'keras' | 'torchvision' | 'timm'
    pretrained: bool
    num_classes: int
    num_params: int
    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W)
    default_layer: str | None = None  # preferred CAM layer; None = auto
    weights: str | None = None  # path of the weights file, if any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelBundle:
    """A model ready to use: the module (eval mode, on its device), its preprocessing and its labels.

    Example:
        >>> b = load_model("resnet18")
        >>> b.label(0)
        'tench'
    """

    model: nn.Module
    preprocess: Preprocess
    labels: list[str] | None
    meta: ModelMeta

    def __post_init__(self) -> None:
        # the registry's preferred layer travels with the module, so every front end's 'auto' honours it
        # (convlens.layers.auto_layer reads it; a plain nn.Module attribute, not part of the state dict)
        if self.meta.default_layer and isinstance(self.model, nn.Module):
            from convlens.layers import DEFAULT_LAYER_ATTR

            setattr(self.model, DEFAULT_LAYER_ATTR, self.meta.default_layer)

    @property
    def pretrained(self) -> bool:
        """True when the weights are trained ones (embedded or from ``--weights``), False for random init.

        Example:
            >>> load_model("efficientnet_lite0").pretrained
            True
        """
        return bool(self.meta.pretrained)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        from convlens.hooks import device_of

        return device_of(self.model)

    def label(self, index: int) -> str:
        """Human name of class ``index`` (``'class 7'`` when the model has no labels)."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"


Builder = Callable[..., ModelBundle]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(weights=None, num_classes=None, device='cpu') -> ModelBundle`` under ``name``.

    A name may be registered once; a duplicate raises :class:`ModelError`.

    Example:
        >>> @register_model("doc_tiny")
        ... def doc_tiny(weights=None, num_classes=None, device="cpu"):
        ...     return bundle_from_module(nn.Conv2d(3, 2, 3), "doc_tiny", "convlens")
        >>> "doc_tiny" in list_models("doc_*")
        True
    """

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ModelError(f"model name '{name}' is already registered.")
        _REGISTRY[name] = fn
        return fn

    return deco


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order: torchvision's weight metadata ``categories``,
    stored in the package (``imagenet_classes.txt``) so that reading them does not import torchvision.

    Example:
        >>> imagenet_labels()[285]
        'Egyptian cat'
    """
    text = (Path(__file__).with_name("imagenet_classes.txt")).read_text(encoding="utf-8")
    return text.splitlines()[:1000]


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _timm_names(pattern: str = "*") -> list[str]:
    import timm

    return list(timm.list_models(pattern))


SOURCES = ("convlens", "torchvision", "timm")


def split_source(name: str) -> tuple[str | None, str]:
    """``'timm:resnet50'`` -> ``('timm', 'resnet50')``; a name without a source prefix -> ``(None, name)``.

    torchvision and timm share names (``resnet50``, ``convnext_tiny``, ``densenet121``) for different
    modules with different weight keys; the prefix says which library builds it. Without one,
    convlens's registry wins, then torchvision, then timm.

    Example:
        >>> split_source("timm:resnet50"), split_source("resnet18"), split_source("net.py:build")
        (('timm', 'resnet50'), (None, 'resnet18'), (None, 'net.py:build'))
    """
    head, sep, tail = name.partition(":")
    if sep and head in SOURCES:
        return head, tail
    return None, name


def _matches(name: str, pattern: str) -> bool:
    """A glob (``resnet*``) matches as a glob; plain text (``resnet``) as a case-insensitive substring."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatch(name, pattern)
    return pattern.lower() in name.lower()


def list_model_sources(pattern: str = "*", *, source: str | None = None) -> list[tuple[str, str]]:
    """``(name, source)`` pairs ``load_model`` accepts: convlens's registry, then torchvision, then timm.

    ``pattern`` is a glob (``resnet*``) or, without glob characters, a case-insensitive substring
    (``resnet`` finds ``wide_resnet50_2`` too); it may carry a source prefix (``timm:resnet*``).
    A name two libraries share is listed once per library: load the second with its prefix.

    Raises:
        ModelError: ``source`` is not one of convlens, torchvision, timm.

    Example:
        >>> [p for p in list_model_sources("resnet18") if p[0] == "resnet18"]
        [('resnet18', 'torchvision'), ('resnet18', 'timm')]
    """
    prefix, pattern = split_source(pattern)
    if source is not None and source not in SOURCES:
        raise ModelError(f"source must be one of {', '.join(SOURCES)}; got '{source}'.")
    if prefix is not None and source is not None and prefix != source:
        raise ModelError(f"the pattern asks for source '{prefix}' but source is '{source}'.")
    source = source or prefix
    pattern = pattern or "*"
    out: list[tuple[str, str]] = []
    if source in (None, "convlens"):
        out += [(n, "convlens") for n in sorted(_REGISTRY) if _matches(n, pattern)]
    if source in (None, "torchvision"):
        out += [(n, "torchvision") for n in _torchvision_names() if _matches(n, pattern)]
    if source in (None, "timm"):
        glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
        out += [(n, "timm") for n in _timm_names(glob) if _matches(n, pattern)]
    return out


def load_name(name: str, source: str) -> str:
    """The name that makes ``load_model`` build ``source``'s ``name``: bare where that library owns the
    bare name (convlens's registry first, then torchvision, then timm), else ``source:name``.

    Example:
        >>> load_name("resnet50", "torchvision"), load_name("resnet50", "timm"), load_name("resnet50d", "timm")
        ('resnet50', 'timm:resnet50', 'resnet50d')
    """
    if name in _REGISTRY:
        owner = "convlens"
    elif name in _torchvision_names():
        owner = "torchvision"
    else:
        owner = "timm"
    return name if owner == source else f"{source}:{name}"


def list_models(pattern: str = "*", *, source: str | None = None) -> list[str]:
    """Names ``load_model`` accepts that match a glob or substring, convlens's own first, then
    torchvision, then timm (each name once; see :func:`list_model_sources` for the library of each).

    Args:
        source: restrict to ``'convlens'``, ``'torchvision'`` or ``'timm'``.

    Example:
        >>> list_models("efficientnet_lite*", source="convlens")
        ['efficientnet_lite0']
    """
    return list(dict.fromkeys(n for n, _ in list_model_sources(pattern, source=source)))


_HEAD_NAMES = ("fc", "classifier", "head", "heads", "last_linear", "logits")


def _classifier_out(sd: dict[str, torch.Tensor]) -> int | None:
    """Number of classes implied by a state dict: rows of its head's 2-D weight.

    The head is the last 2-D weight under a head-like top-level name (``fc``, ``classifier``,
    ``head``, ``heads``...; numbered parts compared as numbers), else the last 2-D weight. Key order
    alone is not enough: safetensors files store keys sorted, so timm's ``head.fc`` comes before
    ``stages.3...``.

    Example:
        >>> _classifier_out({"head.fc.weight": torch.zeros(10, 4), "stages.3.mlp.fc2.weight": torch.zeros(4, 8)})
        10
    """
    two_d = [k for k, v in sd.items() if v.ndim == 2 and k.endswith("weight")]
    if not two_d:
        return None
    heads = [k for k in two_d if k.split(".")[0] in _HEAD_NAMES]
    if heads:
        natural = lambda k: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in k.split(".")]  # noqa: E731
        return int(sd[max(heads, key=natural)].shape[0])
    return int(sd[two_d[-1]].shape[0])


def load_weights_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``sd`` into ``model``; any missing/unexpected key or shape mismatch is a ModelError.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> load_weights_into(m, {k: torch.zeros_like(v) for k, v in m.state_dict().items()}, "zeros")
        >>> float(m.weight.detach().abs().sum())
        0.0
    """
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')")
        if bad:
            k = bad[0]
            parts.append(
                f"{len(bad)} with wrong shape (e.g. '{k}': file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise ModelError(f"weights from {source} do not fit {type(model).__name__}: " + ", ".join(parts) + ".")
    model.load_state_dict(sd, strict=True)


def _sidecar(path: Path) -> dict[str, Any]:
    """Metadata stored beside a weights file as ``<stem>.json`` (or ``labels.json``), as training writes it:
    ``{"labels": [...], "image_size": S, "model": name}``. Only well-formed fields are returned."""
    for cand in (path.with_suffix(".json"), path.parent / "labels.json"):
        if not cand.is_file():
            continue
        try:
            data = json.loads(cand.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, list):
            data = {"labels": data}
        if not isinstance(data, dict):
            continue
        out: dict[str, Any] = {}
        labels = data.get("labels")
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
            out["labels"] = labels
        size = data.get("image_size")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
            out["image_size"] = size
        if isinstance(data.get("model"), str) and data["model"]:
            out["model"] = data["model"]  # the architecture the weights were trained for (hint on mismatch)
        return out
    return {}


def bundle_from_module(
    model: nn.Module,
    name: str,
    source: str,
    *,
    preprocess: Preprocess | None = None,
    labels: list[str] | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    default_layer: str | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    extra: dict[str, Any] | None = None,
) -> ModelBundle:
    """Wrap a built module into a :class:`ModelBundle` (eval mode, moved to ``device``).

    Example:
        >>> bundle_from_module(nn.Conv2d(3, 8, 3), "tiny", "file").meta.num_params
        224
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"model '{name}' is a {type(model).__name__}, not a torch.nn.Module.")
    model = model.to(device).eval()
    pre = preprocess or Preprocess()
    n_params = sum(p.numel() for p in model.parameters())
    if num_classes is None:
        num_classes = int(getattr(model, "num_classes", 0) or 0) or (len(labels) if labels else 0)
    meta = ModelMeta(
        name=name,
        source=source,
        pretrained=pretrained,
        num_classes=num_classes,
        num_params=n_params,
        input_size=(pre.channels, pre.size, pre.size),
        default_layer=default_layer,
        weights=weights,
        extra=dict(extra or {}),
    )
    return ModelBundle(model=model, preprocess=pre, labels=labels, meta=meta)


def random_weights_message(name: str) -> str:
    """The one sentence that announces random weights, naming the fix.

    Example:
        >>> "--weights FILE" in random_weights_message("resnet50")
        True
    """
    return (
        f"model '{name}' has RANDOM weights (nothing is downloaded; only efficientnet_lite0 ships pretrained), "
        "so its predictions, maps and filters mean nothing; pass --weights FILE (load_model(..., weights=FILE)) "
        "with trained .safetensors/.pt weights."
    )


def _first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution registered in ``model`` (None if it has none)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def _default_preprocess(model: nn.Module) -> Preprocess:
    """ImageNet-style preprocessing; grayscale (1-channel) input when the first convolution takes one channel."""
    if _first_conv_channels(model) == 1:
        return Preprocess(mean=GRAY_MEAN, std=GRAY_STD)
    return Preprocess()


def _probe_outputs(model: nn.Module, pre: Preprocess, name: str) -> int | None:
    """One zero-input forward of a user's model (eval, no grad): materializes lazy layers and returns the
    number of classes of its (N, K) logits (:func:`convlens.models.logits`), or None when it has none."""
    from convlens.hooks import preserve_state
    from convlens.models.logits import logits

    try:
        with preserve_state(model, train=False), torch.no_grad():
            out = model(torch.zeros(1, pre.channels, pre.size, pre.size))
    except Exception as e:
        if any(nn.parameter.is_lazy(p) for p in model.parameters()):
            raise ModelError(
                f"model '{name}' has lazy layers and a {pre.channels}x{pre.size}x{pre.size} probe input failed "
                f"({type(e).__name__}: {e})."
            ) from None
        return None  # the model may want another input size; its head stays unknown
    t = logits(out, required=False)
    return int(t.shape[1]) if t is not None else None


def _load_user_file(spec: str) -> tuple[nn.Module, str]:
    file, _, factory = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist (expected 'path/to/file.py:factory').")
    if not factory.isidentifier():
        raise ModelError(f"'{factory}' in '{spec}' is not a Python name (expected 'path/to/file.py:factory').")
    mod_name = f"convlens_user_{abs(hash(str(path.resolve())))}"
    try:
        sp = importlib.util.spec_from_file_location(mod_name, path)
        if sp is None or sp.loader is None:
            raise ModelError(f"cannot import '{path}' as a Python module.")
        module = importlib.util.module_from_spec(sp)
        sys.modules[mod_name] = module
        sp.loader.exec_module(module)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"importing model file '{path}' failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ModelError(f"'{path}' has no callable named '{factory}'.")
    try:
        model = fn()
    except Exception as e:
        raise ModelError(f"'{spec}' raised {type(e).__name__}: {e}") from None
    return model, path.stem


def load_model(
    name: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    num_classes: int | None = None,
    seed: int = 0,
) -> ModelBundle:
    """Build a model by name, load local weights if given, return it in eval mode with its preprocessing and labels.

    Args:
        name: a registered name, ``file.py:factory``, a torchvision or a timm model name.
        weights: local ``.safetensors``/``.pt``/``.pth`` file; its head size sets ``num_classes`` when
            that is not given (so fine-tuned checkpoints load as they were saved).
        device: where the model lives (``'cpu'``, ``'cuda'``, ``'cuda:1'``...).
        num_classes: size of a fresh head (random init).
        seed: seed of the random initialization (untrained weights, fresh heads), so the same call
            gives the same model every run; the caller's global RNG state is left untouched.

    Raises:
        ModelError: unknown name (with close matches), unloadable weights, or a factory that fails.

    Warns:
        RandomWeightsWarning: the model has random weights (``bundle.pretrained`` is False); the
            message names the fix (``--weights FILE``).

    Example:
        >>> load_model("efficientnet_lite0").labels[285]
        'Egyptian cat'
    """
    if not isinstance(name, str) or not name:
        raise ModelError("model name must be a non-empty string.")
    if num_classes is not None and num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}.")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"device '{device}' is not a valid torch device ({e}).") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' requested but CUDA is not available on this machine.")
    if weights is not None and Path(weights).is_dir():
        # a `convlens train` run folder: its final weights are model.safetensors
        inside = Path(weights) / "model.safetensors"
        if not inside.is_file():
            raise ModelError(f"weights path '{weights}' is a folder without model.safetensors; give a weights file.")
        weights = inside
    is_keras = name.lower().endswith(".keras")
    if is_keras and weights is not None:
        raise ModelError(f"'{name}' holds its own weights; drop --weights (a .keras file is model and weights).")
    sd = read_state_dict(weights) if weights is not None else None
    wpath = str(weights) if weights is not None else None
    if num_classes is None and sd is not None:
        num_classes = _classifier_out(sd)
    side = _sidecar(Path(weights)) if weights is not None else (_sidecar(Path(name)) if is_keras else {})
    try:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            bundle = _build(name, sd, wpath, num_classes, torch_device)
    except ModelError as e:
        trained_for = side.get("model")
        if sd is not None and trained_for and trained_for != name:
            raise ModelError(
                f"{e} These weights were trained for model '{trained_for}': pass --model {trained_for}."
            ) from None
        raise
    if "labels" in side:
        bundle.labels = side["labels"]
    if "image_size" in side and not is_keras:  # a Keras model's size is its input shape (the sidecar fills a free one)
        # a model trained by `convlens train` saw squash-resized images of this size: predict the same way
        bundle.preprocess = replace(bundle.preprocess, size=side["image_size"], resize="squash")
        bundle.meta = replace(
            bundle.meta, input_size=(bundle.preprocess.channels, side["image_size"], side["image_size"])
        )
    if not bundle.meta.pretrained:
        warnings.warn(random_weights_message(bundle.meta.name), RandomWeightsWarning, stacklevel=2)
    return bundle


def _build(
    name: str,
    sd: dict[str, torch.Tensor] | None,
    wpath: str | None,
    num_classes: int | None,
    torch_device: torch.device,
) -> ModelBundle:
    """Build ``name`` from the registry, a user file, or the torchvision/timm zoo, with ``sd`` loaded if given."""
    prefix, bare = split_source(name)
    if prefix == "convlens":
        if bare not in _REGISTRY:
            raise ModelError(f"convlens has no model '{bare}'; its own models: {', '.join(sorted(_REGISTRY))}.")
        name = bare
    if name in _REGISTRY:
        bundle = _REGISTRY[name](weights=sd, num_classes=num_classes, device=torch_device)
        if sd is not None:
            bundle.meta = replace(bundle.meta, weights=wpath, pretrained=True)
    elif name.lower().endswith(".keras"):
        from convlens.models.keras_adapter import load_keras

        module, pre, info = load_keras(name, device=torch_device)
        n_out = info["num_classes"]
        bundle = bundle_from_module(
            module,
            Path(name).stem,
            "keras",
            preprocess=pre,
            labels=imagenet_labels() if n_out == 1000 else None,
            pretrained=True,  # the file holds the weights the model was saved with
            num_classes=n_out,
            weights=name,
            device=torch_device,
            extra={k: v for k, v in info.items() if k != "num_classes"},
        )
    elif name.endswith(".py") or ".py:" in name:
        if ":" not in name:
            raise ModelError(f"'{name}' needs a factory: use 'path/to/file.py:factory'.")
        module, stem = _load_user_file(name)
        if sd is not None:
            load_weights_into(module, sd, f"'{wpath}'")
        pre = _default_preprocess(module)
        n_out = _probe_outputs(module, pre, stem) or _classifier_out(module.state_dict())
        labels = imagenet_labels() if n_out == 1000 else None
        bundle = bundle_from_module(
            module,
            stem,
            "file",
            preprocess=pre,
            labels=labels,
            pretrained=sd is not None,
            weights=wpath,
            device=torch_device,
            num_classes=n_out,
        )
    else:
        bundle = _load_zoo(name, sd, wpath, num_classes, torch_device)
    return bundle


#: torchvision models with auxiliary classifiers. torchvision's builders, when they load weights, build
#: the aux heads (the checkpoints hold them); inception_v3 keeps them (aux_logits defaults to True, its
#: documented 27,161,264 parameters include them), googlenet drops them after loading (6,624,904).
_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}

_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


def _construct(build: Any, device: torch.device | None) -> nn.Module:
    """Run ``build()``; on the meta device, build there directly (no memory, no initialization: the whole
    torchvision zoo's architectures in seconds). Builders that compute with tensors (RegNet's widths)
    cannot run under the meta device: they are built on the CPU with weight initialization skipped
    (meta weights have no values to initialize) and moved."""
    if device is None or device.type != "meta":
        return build()
    try:
        with torch.device("meta"):
            return build()
    except NotImplementedError:
        saved = {n: getattr(nn.init, n) for n in _INIT_FUNCTIONS if hasattr(nn.init, n)}
        try:
            for n in saved:
                setattr(nn.init, n, lambda t, *a, **k: t)
            return build().to("meta")
        finally:
            for n, f in saved.items():
                setattr(nn.init, n, f)


def _settle_aux_heads(name: str, module: nn.Module, sd: dict[str, torch.Tensor] | None, wpath: str | None) -> bool:
    """Finish an aux-head model as torchvision's builder does when it loads weights: googlenet loads the
    checkpoint with its aux heads, then drops them; inception_v3 keeps them. A checkpoint saved without
    aux heads loads into a model without them. Returns True when ``sd`` was loaded here."""
    heads = _AUX_HEADS.get(name, ())
    if not heads:
        return False
    has_aux = sd is not None and any(k.startswith(heads[0] + ".") for k in sd)
    loaded = False
    if name == "googlenet" and has_aux:
        load_weights_into(module, sd, f"'{wpath}'")  # type: ignore[arg-type]
        loaded = True
    if name == "googlenet" or (sd is not None and not has_aux):
        module.aux_logits = False
        for h in heads:
            setattr(module, h, None)
    return loaded


def _build_torchvision(name: str, n_cls: int, device: torch.device | None = None) -> tuple[nn.Module, Preprocess]:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": n_cls}
    if name in _AUX_HEADS:  # as torchvision's builders do when they load weights: aux heads, inputs re-normalized
        kwargs.update(aux_logits=True, transform_input=True, init_weights=True)
    try:
        module = _construct(lambda: torchvision.models.get_model(name, **kwargs), device)
    except Exception as e:
        raise ModelError(f"torchvision could not build '{name}': {type(e).__name__}: {e}") from None
    size = 299 if name == "inception_v3" else 224
    pre = Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="crop", crop_pct=0.875)
    return module, pre  # torchvision: resize 256, crop 224


def _build_timm(name: str, n_cls: int, device: torch.device | None = None) -> tuple[nn.Module, Preprocess]:
    import timm

    try:
        module = _construct(lambda: timm.create_model(name, pretrained=False, num_classes=n_cls), device)
    except Exception as e:
        raise ModelError(f"timm could not build '{name}': {type(e).__name__}: {e}") from None
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    c, h, w = cfg.get("input_size", (3, 224, 224))
    pre = Preprocess(
        size=int(h),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        resize="crop",
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bilinear", "bicubic")
        else "bilinear",
    )
    return module, pre


def _is_timm(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


_ZOO = {"torchvision": (_build_torchvision, lambda n: n in _torchvision_names()), "timm": (_build_timm, _is_timm)}


def _fits(module: nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return set(own) == set(sd) and all(tuple(own[k].shape) == tuple(sd[k].shape) for k in own)


def _load_zoo(
    name: str, sd: dict[str, torch.Tensor] | None, wpath: str | None, num_classes: int | None, device: torch.device
) -> ModelBundle:
    prefix, bare = split_source(name)
    n_cls = num_classes or 1000
    if prefix is not None:
        builder, has = _ZOO[prefix]
        if not has(bare):
            close = difflib.get_close_matches(bare, [n for n, _ in list_model_sources(source=prefix)], n=3, cutoff=0.6)
            hint = ("did you mean " + ", ".join(f"'{prefix}:{c}'" for c in close) + "?") if close else ""
            raise ModelError(f"{prefix} has no model '{bare}'; {hint or f'run `convlens models --source {prefix}`.'}")
        source = prefix
    else:
        source = next((src for src, (_, has) in _ZOO.items() if has(bare)), None)
        if source is None:
            candidates = list(dict.fromkeys(list(_REGISTRY) + _torchvision_names() + _timm_names()))
            close = difflib.get_close_matches(bare, candidates, n=3, cutoff=0.6)
            hint = (
                ("did you mean " + ", ".join(f"'{c}'" for c in close) + "?")
                if close
                else "run `convlens models` to list them."
            )
            raise ModelError(f"unknown model '{name}'; {hint}")
    module, pre = _ZOO[source][0](bare, n_cls, device)
    loaded = source == "torchvision" and _settle_aux_heads(bare, module, sd, wpath)
    if sd is not None and not loaded:
        try:
            load_weights_into(module, sd, f"'{wpath}'")
        except ModelError as e:
            # torchvision and timm share names for different modules: say so when the other one fits
            for other, (build, has) in _ZOO.items():
                if other != source and has(bare):
                    try:
                        fits = _fits(build(bare, n_cls)[0], sd)
                    except ModelError:
                        fits = False
                    if fits:
                        raise ModelError(
                            f"{e} They fit {other}'s '{bare}' (a different module with the same name): "
                            f"pass --model {other}:{bare}."
                        ) from None
            raise
    labels = imagenet_labels() if n_cls == 1000 else None
    return bundle_from_module(
        module,
        name,
        source,
        preprocess=pre,
        labels=labels,
        pretrained=sd is not None,
        num_classes=n_cls,
        weights=wpath,
        device=device,
    )
