"""Keras 3 models (``.keras`` files) as ordinary convlens models, on Keras's torch backend.

With ``KERAS_BACKEND=torch`` a ``keras.Model`` is a ``torch.nn.Module`` and every Keras layer fires torch
forward hooks, but two things differ from a PyTorch model: ``named_modules()`` does not list the layers,
and tensors are channels-last ``(N, H, W, C)``. :class:`KerasModule` bridges both:

* it takes the usual ``(N, C, H, W)`` batch and feeds Keras ``(N, H, W, C)`` (a ``channels_first`` model
  gets its input as is);
* every Keras layer is a named submodule under its Keras name (``conv2d_1``, ``dense``; layers of a nested
  model as ``inner_model.conv2d``), so :func:`convlens.layers.resolve`, hooks, ``"auto"``, summaries and
  ``--layer`` work unchanged; each 4-D layer declares its layout (``convlens_layout = "NHWC"``), which the
  one layout conversion in :mod:`convlens.layers` reads to return feature maps as ``(N, C, H, W)``;
* a final ``softmax`` (or a 1-unit ``sigmoid``) activation is taken off during the forward pass, so the
  output is logits as for every other model (``softmax(logits)`` equals Keras's probabilities; a 1-unit
  sigmoid becomes two logits ``[0, z]`` whose softmax is ``[1 - sigmoid(z), sigmoid(z)]``);
* its parameters are exactly the Keras weights (``model.weights``), so a parameter count equals
  ``model.count_params()`` (the int32 seed of a ``Dropout`` layer is state, not a weight).

Preprocessing follows the model: the input size from its input shape (a free size: ``image_size`` of the
``model.json`` sidecar, else 224), 1 or 3 channels, squash resize as ``keras.utils.image_dataset_from_directory``
does, and pixel values in ``[0, 1]``, or ``0..255`` when a ``Rescaling`` layer inside the model scales them
(so nothing is normalized twice). A sidecar's ``mean``/``std`` (on the [0, 1] scale) override this.

Keras is an optional extra (``pip install 'convlens[keras]'``); the backend is set to torch before Keras
is imported, and a Keras already imported with another backend is an error.

Example:
    >>> import os, tempfile
    >>> keras = import_keras()
    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
    ...                       keras.layers.Flatten(name="flat"), keras.layers.Dense(4, activation="softmax", name="out")])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> m.save(path)
    >>> net, pre, info = load_keras(path)
    >>> [n for n, _ in net.named_children()], pre.size, info["count_params"] == sum(p.numel() for p in net.parameters())
    (['c', 'flat', 'out'], 8, True)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convlens.errors import InputError, ModelError, first_line
from convlens.models.preprocess import Preprocess

__all__ = ["KerasModule", "import_keras", "load_keras", "KERAS_EXTRA"]

#: how to install the optional dependency
KERAS_EXTRA = "pip install 'convlens[keras]'"


def import_keras() -> Any:
    """Import Keras 3 with the torch backend (setting ``KERAS_BACKEND=torch`` first when Keras is not loaded yet).

    Raises:
        ModelError: Keras is missing (names the extra), is not Keras 3, or was already imported with
            another backend (it cannot switch backends inside one process).

    Example:
        >>> import_keras().backend.backend()
        'torch'
    """
    mod = sys.modules.get("keras")
    if mod is None:
        os.environ["KERAS_BACKEND"] = "torch"
        try:
            import keras as mod
        except ImportError:
            raise ModelError(f"reading a .keras model needs Keras 3; install it with {KERAS_EXTRA}.") from None
    version = str(getattr(mod, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
        raise ModelError(f"reading a .keras model needs Keras 3 (found {version}); install it with {KERAS_EXTRA}.")
    backend = mod.backend.backend()
    if backend != "torch":
        raise ModelError(
            f"Keras was already imported with the '{backend}' backend; convlens runs Keras models on the torch "
            "backend: set KERAS_BACKEND=torch before anything imports keras (or import convlens first)."
        )
    return mod


def _nested(layer: Any) -> list[Any]:
    """The layers of a nested model (Sequential/Functional used as a layer); [] for a plain layer."""
    keras = sys.modules.get("keras")
    inner = getattr(layer, "layers", None)
    is_model = keras is not None and isinstance(layer, keras.Model)
    return list(inner) if is_model and isinstance(inner, list) else []


def _module_name(name: str) -> str:
    return name.replace(".", "_") or "layer"  # torch module names cannot hold dots


def _register_layers(parent: nn.Module, layers: list[Any], keras: Any) -> None:
    """Add each Keras layer to ``parent`` under its Keras name; a nested model's layers go inside it."""
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue  # an input placeholder is never called
        name = _module_name(layer.name)
        if name in parent._modules:
            continue
        while hasattr(parent, name) and name not in parent._modules:  # 'forward', 'training', ... stay methods
            name += "_"
        parent.add_module(name, layer)
        inner = _nested(layer)
        if inner:
            _register_layers(layer, inner, keras)


class KerasModule(nn.Module):
    """A Keras 3 model (torch backend) as an ``nn.Module`` taking ``(N, C, H, W)`` and returning logits.

    Attributes:
        keras_model: the wrapped ``keras.Model`` (not a registered submodule: its layers are).
        channels_first: the model's layers are ``channels_first`` (input fed as is).
        head_kind: ``'softmax'`` (a final softmax activation), ``'softmax_layer'`` (a final ``Softmax`` layer),
            ``'sigmoid'`` (one sigmoid unit) or ``None``: what is taken off to give logits.

    A Keras layer whose name is already an ``nn.Module`` attribute (``forward``, ``training``...) is
    registered as ``name_``.
    """

    def __init__(self, model: Any, *, channels_first: bool = False) -> None:
        super().__init__()
        keras = import_keras()
        object.__setattr__(self, "keras_model", model)  # the layers are the submodules, not the container
        self.channels_first = bool(channels_first)
        self._weights = {id(v.value) for v in model.weights}
        # the layer that produces the (first) output; for a Sequential model, its last layer
        outputs = getattr(model, "outputs", None) or []
        history = getattr(outputs[0], "_keras_history", None) if outputs else None
        last = getattr(history, "operation", None) or (model.layers[-1] if model.layers else None)
        act = getattr(getattr(last, "activation", None), "__name__", None)
        units = outputs[0].shape[-1] if outputs else None
        if isinstance(last, keras.layers.Softmax):
            self.head_kind: str | None = "softmax_layer"  # its input is the logits
        elif act == "softmax":
            self.head_kind = "softmax"
        else:
            self.head_kind = "sigmoid" if act == "sigmoid" and units == 1 else None
        object.__setattr__(self, "_last", last)  # a Keras layer, registered below under its own name
        self._logits: list[torch.Tensor] = []
        _register_layers(self, list(model.layers), keras)  # last: names taken by attributes above get a '_'

    def named_parameters(  # type: ignore[override]
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """The Keras weights only (``model.weights``: trainable and non-trainable); RNG seed state is left out."""
        for n, p in super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate):
            if id(p) in self._weights:
                yield n, p

    @contextlib.contextmanager
    def _linear_head(self) -> Iterator[None]:
        """Take the final softmax/sigmoid off for one call (restored even on errors)."""
        if self.head_kind is None:
            yield
            return
        if self.head_kind == "softmax_layer":  # keep the Softmax layer's input: the logits
            keep = self._logits

            def grab(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                keep.append(args[0] if args else next(iter(kwargs.values())))

            handle = self._last.register_forward_pre_hook(grab, with_kwargs=True)
            try:
                yield
            finally:
                handle.remove()
            return
        keras = import_keras()
        saved = self._last.activation
        self._last.activation = keras.activations.linear
        try:
            yield
        finally:
            self._last.activation = saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> logits ``(N, K)`` (or the model's own output when it is no classifier)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"a Keras model here takes an (N, C, H, W) batch, got {got}.")
        keras = import_keras()
        feed = x if self.channels_first else x.permute(0, 2, 3, 1)  # (N, H, W, C) for channels_last Keras
        dev = x.device
        self._logits = []
        with keras.device(f"{dev.type}:{dev.index or 0}" if dev.type != "cpu" else "cpu"), self._linear_head():
            y = self.keras_model(feed, training=self.training)
        if isinstance(y, (list, tuple)) and y:
            y = y[0]
        if self.head_kind == "softmax_layer" and self._logits:
            y, self._logits = self._logits[-1], []  # the Softmax layer's input
        if self.head_kind == "sigmoid" and isinstance(y, torch.Tensor) and y.ndim == 2 and y.shape[1] == 1:
            y = torch.cat([torch.zeros_like(y), y], dim=1)  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
        return y


def _declare_bias(layer: Any, keras: Any) -> None:
    """Give FullGrad the layer's per-channel implicit bias (``convlens_bias``; see
    :mod:`convlens.explain.fullgrad`): a 2-D convolution's bias when its output is ``z`` or ``relu(z)``,
    BatchNormalization's ``beta - mean * gamma / sqrt(var + eps)``."""
    act = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if getattr(layer, "rank", None) == 2 and getattr(layer, "use_bias", False) and act in ("linear", "relu"):
        layer.convlens_bias = lambda: layer.bias.value
        layer.convlens_bias_relu = act == "relu"
    elif isinstance(layer, keras.layers.BatchNormalization):

        def bn_bias() -> torch.Tensor:
            var = layer.moving_variance.value
            gamma = layer.gamma.value if layer.gamma is not None else torch.ones_like(var)
            beta = layer.beta.value if layer.beta is not None else torch.zeros_like(var)
            return beta - layer.moving_mean.value * gamma / torch.sqrt(var + layer.epsilon)

        layer.convlens_bias = bn_bias


def _data_format(model: Any) -> str:
    """``'channels_first'`` when the model's spatial layers say so, else ``'channels_last'``."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        fmt = getattr(layer, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            return str(fmt)
        stack = _nested(layer) + stack
    return "channels_last"


def _rescales_inputs(model: Any, keras: Any) -> bool:
    """True when a ``Rescaling`` layer comes before the first layer with weights: the model scales raw pixels."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.layers.Rescaling):
            return True
        inner = _nested(layer)
        if inner:
            stack = inner + stack
        elif layer.weights:
            return False
    return False


def _sidecar_stats(path: Path) -> dict[str, Any]:
    """``image_size``, ``mean`` and ``std`` from ``<stem>.json`` beside the model (as training scripts write it)."""
    side = path.with_suffix(".json")
    try:
        data = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {}
    if not isinstance(data, dict):
        return out
    if isinstance(data.get("image_size"), int) and not isinstance(data["image_size"], bool) and data["image_size"] > 0:
        out["image_size"] = data["image_size"]
    for key in ("mean", "std"):
        v = data.get(key)
        if isinstance(v, list) and v and all(isinstance(a, (int, float)) for a in v):
            out[key] = tuple(float(a) for a in v)
    return out


def _declare_layouts(net: KerasModule, input_shape: tuple[int, int, int], device: torch.device) -> int | None:
    """One zero forward: each layer with a 4-D output declares its layout; returns the class count."""
    fmt = "NCHW" if net.channels_first else "NHWC"
    seen: dict[str, int] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=name: seen.__setitem__(n, o.ndim if torch.is_tensor(o) else 0))
        for name, m in net.named_modules()
        if name and not name.endswith("_torch_params")
    ]
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    modules = dict(net.named_modules())
    keras = import_keras()
    for name, ndim in seen.items():
        layer = modules[name]
        act = getattr(getattr(layer, "activation", None), "__name__", None)
        if act == "relu" or (
            isinstance(layer, keras.layers.ReLU) and layer.max_value is None and not layer.negative_slope
        ):
            layer.convlens_relu_output = True  # guided backpropagation's ReLU rule applies to its output
        if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "kernel", None) is not None:
            # Keras's (kh, kw, C_in/groups, C_out) kernel in torch's (C_out, C_in/groups, kh, kw) layout
            layer.convlens_conv_weight = lambda layer=layer: layer.kernel.value.permute(3, 2, 0, 1)
        if ndim == 4:
            modules[name].convlens_layout = fmt  # read by convlens.layers' one layout conversion
            _declare_bias(modules[name], keras)
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def load_keras(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[KerasModule, Preprocess, dict[str, Any]]:
    """Load a ``.keras`` file as ``(module, preprocessing, info)``; ``info`` holds ``num_classes``,
    ``count_params`` (Keras's own count), ``data_format``, ``rescaling`` and ``head``.

    Raises:
        ModelError: missing/corrupt file, Keras missing or on another backend, an input that is not one
            image of 1 or 3 channels.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"Keras model file '{p}' does not exist.")
    keras = import_keras()
    dev = torch.device(device)
    scope = f"{dev.type}:{dev.index or 0}" if dev.type != "cpu" else "cpu"
    try:
        with keras.device(scope):
            model = keras.saving.load_model(str(p), compile=False)
    except Exception as e:  # noqa: BLE001 - zip/h5/config errors of a user's file: one sentence
        raise ModelError(f"Keras could not load '{p}' ({type(e).__name__}: {first_line(e)}).") from None
    shape = tuple(getattr(model, "inputs", None)[0].shape) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or len(model.inputs) != 1:
        raise ModelError(
            f"Keras model '{p.name}' must take one image batch (N, H, W, C); its input is {shape or 'unknown'}."
        )
    fmt = _data_format(model)
    c, h, w = (shape[1], shape[2], shape[3]) if fmt == "channels_first" else (shape[3], shape[1], shape[2])
    if c not in (1, 3):
        raise ModelError(f"Keras model '{p.name}' takes {c} input channels; convlens feeds images of 1 or 3 channels.")
    side = _sidecar_stats(p)
    if h is None or w is None:
        h = w = side.get("image_size", 224)
    elif h != w:
        raise ModelError(f"Keras model '{p.name}' takes {h}x{w} inputs; convlens preprocesses to square images.")
    rescaling = _rescales_inputs(model, keras)
    scale = (1.0 / 255.0) if rescaling else 1.0  # std 1/255: the [0, 1] image becomes 0..255 for Rescaling
    mean = side.get("mean", (0.0,) * c)
    std = side.get("std", (scale,) * c)
    if len(mean) != c or len(std) != c:
        raise ModelError(f"the sidecar of '{p.name}' gives mean/std for {len(mean)} channels; the model has {c}.")
    pre = Preprocess(size=int(h), mean=mean, std=std, resize="squash", interpolation="bilinear")
    net = KerasModule(model, channels_first=fmt == "channels_first").to(dev).eval()
    n_cls = _declare_layouts(net, (c, int(h), int(w)), dev)
    info = {
        "num_classes": n_cls,
        "count_params": int(model.count_params()),
        "data_format": fmt,
        "rescaling": rescaling,
        "head": net.head_kind,
    }
    return net, pre, info
