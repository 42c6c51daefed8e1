"""The explorer's JSON API (FastAPI). Every endpoint calls one core function and returns its result
dataclass serialized by :func:`convlens.serialize.to_jsonable`, the same fields the CLI's ``--json``
prints. No endpoint opens a path taken from the request: images are addressed by server-side ids.

Contract (kept; more endpoints are added for the page):

- ``GET /api/status`` -> ``{"model", "device", "cache_bytes", "cache_limit_bytes", ...}``
- ``GET /api/images`` -> ``[{"id", "name"}]``; ``POST /api/images`` (multipart ``file``) -> ``{"id", "name"}``
- ``GET /api/images/{id}/predict`` -> the ``top`` list of ``convlens predict --json``
- ``GET /api/images/{id}/unit?layer=&c=&i=&j=`` -> the JSON of ``convlens unit --json``
- ``GET /api/shape?input=HxWxC&kernel=&stride=&padding=&dilation=&filters=`` -> ``convlens shape --json``
- errors: ``{"error": "..."}`` with a 4xx status (unknown image or layer 404, bad parameters 400/422).

Example:
    >>> from fastapi.testclient import TestClient
    >>> explorer = Explorer.for_model("resnet18", bundled=False)
    >>> client = TestClient(create_app(explorer))
    >>> client.get("/api/shape", params={"input": "128x128x3", "kernel": 3, "stride": 2, "filters": 8}).json()["output"]
    [63, 63, 8]
    >>> client.get("/api/images/../../etc/passwd/predict").status_code
    404
    >>> explorer.close()  # stops the job thread, removes the temp folder
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from convlens.errors import ConvlensError, InputError, LayerError
from convlens.serialize import to_jsonable
from convlens.serve.state import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_UPLOAD_BYTES,
    ActivationCache,
    ImageEntry,
    ImageStore,
    JobRunner,
    make_temp_dir,
    remove_temp_dir,
)

__all__ = ["Explorer", "create_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).with_name("static")

#: Feature visualization is bounded: at most this many optimization steps per request.
MAX_FEATVIS_STEPS = 256
#: Top patches read at most this many images of the server's set (bundled, --images, uploads).
MAX_TOP_PATCH_IMAGES = 256


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(array)).decode("ascii")


def _heat_rgba(m: np.ndarray) -> np.ndarray:
    """A [0, 1] map as an RGBA heat layer: inferno colours, opaque where the map is large, clear where it is 0."""
    from convlens.plot import apply_colormap

    rgb = apply_colormap(np.clip(m, 0.0, 1.0), "inferno")
    alpha = (np.sqrt(np.clip(m, 0.0, 1.0)) * 255).round().astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def _b64_float32(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


class Explorer:
    """The server's state around one loaded :class:`~convlens.models.ModelBundle`.

    Model calls run under one lock (``self.lock``): PyTorch modules with hooks are not re-entrant.
    """

    def __init__(
        self,
        bundle: Any,
        *,
        images_dir: str | Path | None = None,
        bundled: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        upload_bytes: int = DEFAULT_UPLOAD_BYTES,
        max_pixels: int = 40_000_000,
    ) -> None:
        self.bundle = bundle
        self.lock = threading.RLock()
        self.images = ImageStore()
        if bundled:
            self.images.add_bundled()
        if images_dir is not None:
            self.images.add_folder(images_dir)
        self.cache = ActivationCache(cache_bytes)
        self.upload_bytes = int(upload_bytes)
        self.max_pixels = int(max_pixels)
        self.jobs = JobRunner()
        self.tmp = make_temp_dir()
        weakref.finalize(self, remove_temp_dir, self.tmp)  # also removed when never closed (exit, GC)
        self._summary: Any = None
        self._maps: dict[str, tuple[int, int, int]] | None = None  # map layers' (C, H, W), computed once
        self._inputs = ActivationCache(64 * 1024 * 1024)  # preprocessed tensors, small
        self.erf_maps = ActivationCache(16 * 1024 * 1024)  # effective fields of recently traced units
        self.graphs: dict[str, Any] = {}  # traced network graphs by depth
        self._job_bundle: tuple[Any, Any] | None = None

    @classmethod
    def for_model(
        cls, model: str = "efficientnet_lite0", *, weights: Any = None, device: str = "cpu", **kw: Any
    ) -> Explorer:
        """Load a model by name (as ``--model``) and wrap it."""
        from convlens.models import load_model

        return cls(load_model(model, weights=weights, device=device), **kw)

    def job_bundle(self) -> tuple[Any, Any]:
        """The bundle background jobs use, and the lock to hold while using it.

        Jobs (feature visualization, top patches) run for seconds to minutes; on a private copy of the
        model they leave the shared one (and its lock) to the interactive requests. A model that
        cannot be copied is shared, under the lock.
        """
        if self._job_bundle is None:
            import copy
            import dataclasses

            try:
                self._job_bundle = (dataclasses.replace(self.bundle, model=copy.deepcopy(self.bundle.model)), None)
            except Exception:  # e.g. a wrapped framework object that refuses deepcopy  # noqa: BLE001
                self._job_bundle = (self.bundle, self.lock)
        return self._job_bundle

    def close(self) -> None:
        """Stop background jobs and remove the temp folder."""
        self.jobs.close()
        remove_temp_dir(self.tmp)

    # ---- model-side helpers (each one core call)
    @property
    def input_chw(self) -> tuple[int, int, int]:
        c, h, w = self.bundle.meta.input_size
        return int(c), int(h), int(w)

    def summary(self) -> Any:
        """:func:`convlens.inspect.summarize` of the model at its input size (computed once)."""
        if self._summary is None:
            from convlens.inspect.summary import summarize_model

            with self.lock:  # the summary `convlens summary --json` prints (with "pretrained")
                self._summary = summarize_model(self.bundle, self.input_chw)
        return self._summary

    def map_layers(self) -> list[str]:
        """Layers whose output is a spatial map of the image: what the activation grid can show, in forward order.

        "A map" is :func:`convlens.layers.layer_layouts`' rule (the one home of layouts): (N, C, H, W) and
        channels-last maps, and the patch tokens of ViT-style models (shown on their grid), but not attention
        internals such as Swin's (N, heads, T, T) weights, which are 4-D without being a map.
        """
        return list(self._map_shapes())

    def map_shape(self, layer: str) -> tuple[int, int, int] | None:
        """(C, H, W) of a listed map layer's output (as the activation endpoints return it), else None."""
        return self._map_shapes().get(layer)

    def _map_shapes(self) -> dict[str, tuple[int, int, int]]:
        if self._maps is None:
            from convlens.errors import ConvlensError as _Err
            from convlens.layers import layer_layouts

            try:
                with self.lock:
                    lay = layer_layouts(self.bundle.model, self.input_chw)
            except _Err:  # the model cannot be probed: plain 4-D outputs count as (N, C, H, W) maps
                lay = {}
            maps: dict[str, tuple[int, int, int]] = {}
            for r in self.summary().layers:
                name = r.name if r.call == 0 else f"{r.name}#{r.call}"
                ts = tuple(int(v) for v in (r.torch_shape or ()))
                lo = lay.get(r.name)
                if lo is None:
                    if len(ts) == 4 and r.output_shape is not None and len(r.output_shape) == 3:
                        h, w, c = r.output_shape
                        maps.setdefault(name, (int(c), int(h), int(w)))
                    continue
                if not lo.is_map or not ts:
                    continue
                if lo.fmt == "NCHW" and len(ts) == 4:
                    maps.setdefault(name, (ts[1], ts[2], ts[3]))
                elif lo.fmt == "NHWC" and len(ts) == 4:
                    maps.setdefault(name, (ts[3], ts[1], ts[2]))
                elif lo.fmt in ("NLC", "NCL") and len(ts) == 3 and lo.grid is not None:
                    maps.setdefault(name, (ts[2] if lo.fmt == "NLC" else ts[1], *lo.grid))
            self._maps = maps
        return self._maps

    def capture_name(self, layer: str) -> str:
        """The name that captures exactly the call a listed layer stands for.

        The layer list names a module's first call ``name`` and later calls ``name#k`` (as
        ``convlens summary``), while a plain ``name`` given to ``get_activations`` / ``trace_unit`` means its
        *last* call. For a module used several times (a pooling layer reused at each resolution, a block
        applied twice) the plain name is therefore pinned to ``name#0``, so that its maps, units and fields
        are the ones of the listed row (its shape and receptive field), not of a later call.
        """
        if "#" in layer:
            return layer
        return f"{layer}#0" if self.capture_calls(layer) > 1 else layer

    def capture_calls(self, layer: str) -> int:
        """How many times module ``layer`` runs in one forward pass at the model's input size (0: never)."""
        calls = 0
        for r in self.summary().layers:
            if r.name == layer:
                calls = max(calls, int(r.call) + 1)
        return calls

    def entry(self, image_id: str) -> ImageEntry:
        e = self.images.get(image_id)
        if e is None:
            raise _NotFound(f"unknown image id '{image_id}'.")
        return e

    def seen(self, e: ImageEntry) -> np.ndarray:
        """The image as the model sees it (resized/cropped, not normalized): the frame of every overlay."""
        return self.bundle.preprocess.resize_image(e.array)

    def input(self, e: ImageEntry) -> torch.Tensor:
        x = self._inputs.get(e.id)
        if x is None:
            x = self.bundle.preprocess([e.array]).to(self.bundle.device)
            self._inputs.put(e.id, x)
        return x

    def activations(self, e: ImageEntry) -> dict[str, torch.Tensor]:
        """Every map layer's activation on this image (one forward pass capturing all of them), cached."""
        acts = self.cache.get(e.id)
        if acts is not None:
            return acts
        from convlens.inspect.activations import get_activations, to_nchw

        with self.lock:
            acts = self.cache.get(e.id)
            if acts is not None:
                return acts
            x = self.input(e)
            listed = {self.capture_name(n): n for n in self.map_layers()}
            raw = get_activations(self.bundle.model, x, list(listed))
            acts = {listed.get(k, k): v.cpu() for k, v in to_nchw(self.bundle.model, x, raw).items() if v.ndim == 4}
            self.cache.put(e.id, acts)
        return acts

    def capture_bytes(self) -> int:
        """Bytes of one all-layer capture (float32), from the map layers' shapes."""
        return sum(4 * c * h * w for c, h, w in self._map_shapes().values())

    def layer_activation(self, e: ImageEntry, layer: str) -> torch.Tensor:
        if layer not in self.map_layers():
            raise LayerError(f"layer '{layer}' has no spatial output map in this model (see /api/layers).")
        if self.cache.get(e.id) is None and self.capture_bytes() > self.cache.limit_bytes:
            # a full capture would not fit the cache: capture only this layer (nothing kept)
            from convlens.inspect.activations import get_activations, to_nchw

            with self.lock:
                x = self.input(e)
                name = self.capture_name(layer)
                return to_nchw(self.bundle.model, x, get_activations(self.bundle.model, x, [name]))[name].cpu()
        return self.activations(e)[layer]


class _NotFound(ConvlensError):
    """Unknown image, layer or job: a 404."""


def create_app(explorer: Explorer) -> FastAPI:
    """The FastAPI application around an :class:`Explorer` (static page at ``/``, JSON under ``/api``)."""
    app = FastAPI(title="convlens explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = explorer
    ex = explorer

    # ---- errors: always {"error": "..."} with a 4xx status
    @app.exception_handler(ConvlensError)
    async def _convlens_error(request: Request, exc: ConvlensError) -> JSONResponse:
        status = 404 if isinstance(exc, (_NotFound, LayerError)) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug or an unsupported model surfaces as one JSON sentence; the server keeps serving
        return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc})"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        parts = []
        for e in errs[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "bad parameter " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"nothing at '{request.url.path}'."
        return JSONResponse({"error": msg}, status_code=exc.status_code)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        # the page may talk to this server only: no CDN, no remote fonts, no beacon can load
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # ---- page
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---- status and layers
    @app.get("/api/status")
    def status() -> dict[str, Any]:
        m = ex.bundle.meta
        return {
            "model": m.name,
            "device": str(ex.bundle.device),
            "cache_bytes": ex.cache.bytes,
            "cache_limit_bytes": ex.cache.limit_bytes,
            "pretrained": bool(getattr(m, "pretrained", False)),
            "input_size": list(ex.input_chw),
            "num_classes": m.num_classes,
            "default_layer": m.default_layer,
            "cached_images": len(ex.cache.keys()),
            "upload_limit_bytes": ex.upload_bytes,
            "features": _features(),
        }

    @app.get("/api/layers")
    def layers(depth: int | None = None) -> dict[str, Any]:
        """The layer summary (``convlens summary --json``) plus the layers that have activation maps."""
        if depth is not None and depth < 1:
            raise InputError(f"depth must be >= 1, got {depth}.")
        data = to_jsonable(ex.summary().to_dict(depth))
        data["map_layers"] = ex.map_layers()
        return data

    # ---- the traced graph (convlens graph)
    def _graph(depth: int | None) -> Any:
        if depth is not None and depth < 1:
            raise InputError(f"depth must be >= 1, got {depth}.")
        key = f"graph:{depth}"
        hit = ex.graphs.get(key)
        if hit is None:
            from convlens.inspect.netgraph import network_graph

            with ex.lock:
                hit = network_graph(ex.bundle.model, ex.input_chw, depth=depth, name=ex.bundle.meta.name)
            ex.graphs[key] = hit
        return hit

    @app.get("/api/graph")
    def graph_json(depth: int | None = None) -> dict[str, Any]:
        """The same JSON as ``convlens graph --json`` (nodes with shapes, params, MACs, RF, jump; edges)."""
        return {**to_jsonable(_graph(depth).to_dict()), "pretrained": bool(ex.bundle.pretrained)}

    @app.get("/api/graph.svg")
    def graph_svg(depth: int | None = None) -> Response:
        """The same SVG as ``convlens graph --out graph.svg`` (drawn natively, no Graphviz)."""
        from convlens.plot.svg import graph_svg as draw

        return Response(draw(_graph(depth)), media_type="image/svg+xml")

    # ---- images
    def _image_json(e: ImageEntry) -> dict[str, Any]:
        return {"id": e.id, "name": e.name, "source": e.source}

    @app.get("/api/images")
    def list_images() -> list[dict[str, Any]]:
        return [_image_json(e) for e in ex.images.list()]

    @app.post("/api/images")
    def upload(file: UploadFile = File(...)) -> JSONResponse:
        from convlens.io import load_image

        data = file.file.read(ex.upload_bytes + 1)
        if len(data) > ex.upload_bytes:
            return JSONResponse(
                {"error": f"the file is larger than the upload limit of {ex.upload_bytes:,} bytes."}, status_code=413
            )
        if not data:
            raise InputError("the uploaded file is empty.")
        # decoded through convlens.io (bomb, truncation and format guards) from a server-named temp file
        tmp = ex.tmp / f"upload-{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            try:
                array = load_image(tmp, max_pixels=ex.max_pixels)
            except InputError as e:
                raise InputError(str(e).replace(str(tmp), _clean_name(file.filename))) from None
        finally:
            tmp.unlink(missing_ok=True)
        e = ex.images.add_array(_clean_name(file.filename), array)
        return JSONResponse(_image_json(e), status_code=201)

    @app.get("/api/images/{image_id}/image")
    def image_png(image_id: str, view: str = "model") -> Response:
        """The image as a PNG: ``view=model`` (the frame the model sees, default) or ``original``."""
        e = ex.entry(image_id)
        if view not in ("model", "original"):
            raise InputError(f"view must be 'model' or 'original', got '{view}'.")
        arr = ex.seen(e) if view == "model" else e.array
        return Response(_png(arr), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/images/{image_id}/predict")
    def predict(image_id: str, topk: int = 5) -> list[dict[str, Any]]:
        """The top-k classes: the ``top`` list of ``convlens predict --json``."""
        from convlens.inspect.predict import predict as core_predict

        e = ex.entry(image_id)
        with ex.lock:
            top = core_predict(ex.bundle, [e.array], topk=topk)[0]
        return to_jsonable(top)

    # ---- activations of one layer: the grid panel
    @app.get("/api/images/{image_id}/activations")
    def activations(image_id: str, layer: str, offset: int = 0, limit: int = 16) -> dict[str, Any]:
        """One layer's channel maps sorted by spatial mean (most active first), one page of raw float32 maps."""
        from convlens.inspect.activations import top_channels

        e = ex.entry(image_id)
        if offset < 0 or not 1 <= limit <= 256:
            raise InputError(f"offset must be >= 0 and limit in 1..256, got offset={offset}, limit={limit}.")
        t = ex.layer_activation(e, layer)  # (1, C, H, W), cpu
        n, c, h, w = t.shape
        ranked = top_channels(t, c)
        page = ranked[offset : offset + limit]
        a = t[0]
        return {
            "image": e.id,
            "layer": layer,
            "shape": [c, h, w],
            "output_shape": [h, w, c],
            "min": float(a.min()),
            "max": float(a.max()),
            "mean": float(a.float().mean()),
            "channels": to_jsonable(ranked),
            "offset": offset,
            "limit": limit,
            "maps": [
                {"channel": s.channel, "mean": s.mean, "max": s.max, "data": _b64_float32(a[s.channel])} for s in page
            ],
        }

    # ---- the unit: trace, receptive fields
    @app.get("/api/images/{image_id}/unit")
    def unit(image_id: str, layer: str, c: int, i: int, j: int) -> dict[str, Any]:
        """The same JSON as ``convlens unit --json``: :func:`convlens.inspect.trace_unit` with its fields."""
        from convlens.inspect import trace_unit

        e = ex.entry(image_id)
        _check_position(_layer_shape(layer), c, i, j)
        with ex.lock:
            t = trace_unit(ex.bundle.model, ex.input(e), ex.capture_name(layer), (c, i, j), field=True)
        if t.erf is not None:
            ex.erf_maps.put(f"{e.id}|{layer}|{c}|{i}|{j}", {"map": torch.from_numpy(np.asarray(t.erf.map, np.float32))})
        return {**to_jsonable(t.to_dict()), "pretrained": bool(ex.bundle.pretrained)}  # as `convlens unit --json`

    @app.get("/api/images/{image_id}/erf")
    def erf(image_id: str, layer: str, c: int, i: int, j: int) -> dict[str, Any]:
        """The unit's effective receptive field (Σ colour |∂y/∂x|) as a heat layer over the model's view."""
        from convlens.inspect import effective_receptive_field

        e = ex.entry(image_id)
        _check_position(_layer_shape(layer), c, i, j)
        hit = ex.erf_maps.get(f"{e.id}|{layer}|{c}|{i}|{j}")  # computed with the trace a moment ago
        if hit is not None:
            m = hit["map"].numpy()
        else:
            with ex.lock:
                m = np.asarray(
                    effective_receptive_field(ex.bundle.model, ex.input(e), ex.capture_name(layer), (c, i, j)).map,
                    np.float32,
                )
        peak = float(m.max()) if m.size else 0.0
        shown = m / peak if peak > 0 else m
        return {
            "image": e.id,
            "layer": layer,
            "at": [c, i, j],
            "zero_gradient": peak == 0.0,
            "heatmap": _data_uri(_heat_rgba(shown)),
        }

    def _layer_shape(layer: str) -> tuple[int, int, int]:
        shape = ex.map_shape(layer)
        if shape is None:
            raise LayerError(f"layer '{layer}' has no spatial output map in this model (see /api/layers).")
        return shape

    def _check_position(shape: tuple[int, int, int], c: int, i: int, j: int) -> None:
        ch, h, w = shape
        if not (0 <= c < ch and 0 <= i < h and 0 <= j < w):
            raise InputError(f"position (c={c}, i={i}, j={j}) is outside the layer's {ch}x{h}x{w} (CxHxW) map.")

    # ---- CAM
    @app.get("/api/methods")
    def methods() -> list[str]:
        """CAM method names (the explain registry)."""
        from convlens.explain import METHODS

        return list(METHODS)

    @app.get("/api/images/{image_id}/cam")
    def cam(
        image_id: str, method: str = "gradcam", layer: str = "auto", target: int | None = None, metrics: bool = False
    ) -> dict[str, Any]:
        """One CAM map for one image (``explain``), as a colour heat layer to blend over the model's view."""
        from convlens.explain import explain, get_method
        from convlens.plot.explain import cam_overlay

        e = ex.entry(image_id)
        name = get_method(method).name  # InputError listing the valid names
        nc = ex.bundle.meta.num_classes
        if target is not None and (target < 0 or (nc > 0 and target >= nc)):
            raise InputError(f"target must be a class index in 0..{nc - 1}, got {target}.")
        spec: Any = (
            layer  # 'auto' is convlens.layers.auto_layer (the registry's default layer included), as `convlens cam`
        )
        if "#" in layer:  # a listed later call 'name#k': CAM (explain) reads a module's last call
            base, _, k = layer.rpartition("#")
            last = ex.capture_calls(base) - 1
            if last >= 0 and (not k.isdigit() or int(k) != last):
                raise LayerError(
                    f"CAM explains a module's last call: pick '{base}#{max(last, 0)}' or a module that runs once "
                    f"(got '{layer}')."
                )
            spec = layer = base
        if layer != "auto" and layer not in dict(ex.bundle.model.named_modules()):
            raise LayerError(f"layer '{layer}' is not a module of this model.")
        with ex.lock:
            x = ex.input(e)
            res = explain(ex.bundle.model, x, name, spec, None if target is None else [target])
            met = _cam_metrics(x, res) if metrics else None
        m = res.maps[0].detach().float().cpu().numpy()
        cls = int(res.targets[0])
        return {
            "image": e.id,
            "target": cls,
            "label": ex.bundle.label(cls),
            "score": float(res.probs[0]) if res.probs is not None else float(res.scores[0]),
            "method": name,
            "layer": ",".join(res.layers),
            "heatmap": _data_uri(cam_overlay(np.zeros((*m.shape, 3), np.uint8), m, alpha=1.0, cmap="jet")),
            "size": [int(m.shape[0]), int(m.shape[1])],
            **({"metrics": met} if met is not None else {}),
        }

    def _cam_metrics(x: torch.Tensor, res: Any) -> dict[str, float]:
        from convlens.explain.metrics import confidence_change, deletion_curve, insertion_curve

        dele = deletion_curve(ex.bundle.model, x, res.maps, res.targets)
        ins = insertion_curve(ex.bundle.model, x, res.maps, res.targets)
        cc = confidence_change(ex.bundle.model, x, res.maps, res.targets)
        return {
            "deletion_auc": float(dele.auc[0]),
            "insertion_auc": float(ins.auc[0]),
            "drop_percent": float(cc.drop[0]),
            "increase": float(cc.increase[0]),
        }

    # ---- feature visualization: a bounded, cancellable background job
    @app.post("/api/featvis")
    def featvis(layer: str, channel: int, steps: int = 128, size: int = 128) -> JSONResponse:
        from convlens.featvis import visualize

        shape = _layer_shape(layer)
        _check_position(shape, channel, 0, 0)
        if not 1 <= steps <= MAX_FEATVIS_STEPS or not 32 <= size <= 256:
            raise InputError(f"steps must be in 1..{MAX_FEATVIS_STEPS} and size in 32..256, got {steps} and {size}.")
        base = layer.split("#")[0]

        def run(job: Any) -> str:
            bundle, lock = ex.job_bundle()
            with lock or contextlib.nullcontext():
                img = visualize(bundle, base, [channel], steps=steps, size=size, callback=job.progress)
            arr = (img[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            return _data_uri(arr)

        job = ex.jobs.submit(
            "featvis",
            {"layer": layer, "channel": channel, "steps": steps, "size": size},
            key=f"featvis:{layer}:{channel}:{steps}:{size}",
            fn=run,
        )
        return JSONResponse(job.public(), status_code=202)

    @app.post("/api/top-patches")
    def top_patches_job(layer: str, channel: int, k: int = 9) -> JSONResponse:
        """The channel's top patches over the server's image set (:func:`convlens.inspect.top_patches`), as a job."""
        from convlens.inspect import top_patches

        _check_position(_layer_shape(layer), channel, 0, 0)
        if not 1 <= k <= 32:
            raise InputError(f"k must be in 1..32, got {k}.")
        entries = ex.images.list()[:MAX_TOP_PATCH_IMAGES]
        captured = ex.capture_name(layer)  # the listed call of a module used several times

        def run(job: Any) -> list[dict[str, Any]]:
            arrays = [e.array for e in entries]
            job.progress(0, len(arrays))
            bundle, lock = ex.job_bundle()
            with lock or contextlib.nullcontext():
                res = top_patches(bundle, arrays, captured, [channel], k=k, batch_size=8, progress=job.progress)
            out = []
            for p in res.channels[0].patches:
                e = entries[p.index]
                out.append(
                    {
                        "image": e.id,
                        "name": e.name,
                        "y": p.y,
                        "x": p.x,
                        "value": p.value,
                        "box": list(p.box),
                        "crop": _data_uri(p.crop),
                    }
                )
            return out

        job = ex.jobs.submit(
            "top-patches",
            {"layer": layer, "channel": channel, "k": k, "images": len(entries)},
            key=f"top:{layer}:{channel}:{k}:{','.join(e.id for e in entries)}",
            fn=run,
        )
        return JSONResponse(job.public(), status_code=202)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = ex.jobs.get(job_id)
        if job is None:
            raise _NotFound(f"unknown job id '{job_id}'.")
        out = job.public()
        if job.status == "done":
            out["result"] = job.result
        return out

    @app.delete("/api/jobs/{job_id}")
    def job_cancel(job_id: str) -> dict[str, Any]:
        job = ex.jobs.cancel(job_id)
        if job is None:
            raise _NotFound(f"unknown job id '{job_id}'.")
        return job.public()

    # ---- arithmetic playground
    @app.get("/api/shape")
    def shape(
        input: str,
        kernel: str | None = None,
        stride: str | None = None,
        padding: str = "0",
        dilation: str = "1",
        filters: int | None = None,
        groups: int = 1,
        op: str = "conv",
        ceil_mode: bool = False,
        convention: str = "torch",
        output_padding: str | None = None,
        scale: str | None = None,
    ) -> dict[str, Any]:
        """The same JSON as ``convlens shape --json`` for the same numbers (conv, pools, convtranspose, upsample)."""
        from convlens.arith.query import shape_query

        q = shape_query(
            input,
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            filters=filters,
            groups=groups,
            op=op,
            ceil_mode=ceil_mode,
            convention=convention,
            output_padding=output_padding,
            scale=scale,
        )
        return q.to_dict()

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def api_not_found(rest: str) -> JSONResponse:
        return JSONResponse({"error": f"no API endpoint '/api/{rest}'."}, status_code=404)

    return app


def _features() -> dict[str, bool]:
    """Which optional core pieces this convlens has (the page hides what is missing instead of failing)."""
    from convlens import inspect as core_inspect

    return {
        "unit": hasattr(core_inspect, "trace_unit"),
        "erf": hasattr(core_inspect, "effective_receptive_field"),
        "top_patches": hasattr(core_inspect, "top_patches"),
    }


def _clean_name(name: str | None) -> str:
    """A display name for an upload: its base name only, printable, at most 80 characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "upload"
    return base[:80]
