"""What the explorer server holds between requests: the loaded model, the image set addressed by
server-side ids, a byte-capped LRU cache of per-image activations, the lock that serializes model
calls, and bounded background jobs (feature visualization).

Nothing here computes a result of its own: activations come from
:func:`convlens.inspect.activations.get_activations`, images from :func:`convlens.io.load_image`.

Example:
    >>> import torch
    >>> cache = ActivationCache(limit_bytes=64)
    >>> cache.put("a", {"x": torch.zeros(4)})          # 16 bytes
    >>> cache.put("b", {"x": torch.zeros(12)})         # 48 bytes: 64 in all, both kept
    >>> cache.put("c", {"x": torch.zeros(4)})          # over the cap: 'a', the least recent, goes
    >>> cache.keys(), cache.bytes
    (['b', 'c'], 64)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convlens.errors import InputError

__all__ = [
    "ActivationCache",
    "ImageEntry",
    "ImageStore",
    "Job",
    "JobRunner",
    "BUNDLED_IMAGES",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_UPLOAD_BYTES",
]

#: The per-image activation cache's default cap: a few full captures of a 224 px ImageNet model.
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
#: Largest accepted upload (the file as sent); the decoded size is capped by ``load_image``'s max_pixels.
DEFAULT_UPLOAD_BYTES = 20 * 1024 * 1024
#: Photos offered without any file: scikit-image's bundled data (loaded on first use, offline).
BUNDLED_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "camera")
#: Uploaded images kept (oldest forgotten first) so that a long session cannot grow memory without bound.
MAX_UPLOADS = 64

_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass
class ImageEntry:
    """One image the server knows: an opaque id, a display name, its source and the RGB array."""

    id: str
    name: str
    source: str  # 'bundled' | 'folder' | 'upload'
    loader: Callable[[], np.ndarray]
    _array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The (H, W, 3) uint8 image, read on first use."""
        if self._array is None:
            self._array = self.loader()
        return self._array


class ImageStore:
    """Images addressed by server-side ids only: no request ever names a path.

    Example:
        >>> s = ImageStore()
        >>> e = s.add_array("tiny", np.zeros((4, 4, 3), np.uint8), source="upload")
        >>> s.get(e.id).name, s.get("../../etc/passwd")
        ('tiny', None)
    """

    def __init__(self) -> None:
        self._items: OrderedDict[str, ImageEntry] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _id(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def add_bundled(self, names: Sequence[str] = BUNDLED_IMAGES) -> None:
        """Offer scikit-image's photos (``chelsea``, ``coffee`` ...) by name."""

        def loader(n: str) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                import skimage.data

                from convlens.io import as_uint8_rgb

                return as_uint8_rgb(getattr(skimage.data, n)())

            return load

        with self._lock:
            for n in names:
                e = ImageEntry(self._id("bundled:" + n), n, "bundled", loader(n))
                self._items[e.id] = e

    def add_folder(self, folder: str | os.PathLike[str]) -> int:
        """Offer every image file of ``folder`` (read lazily through :func:`convlens.io.load_image`)."""
        from convlens.io import list_images, load_image

        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"--images '{root}' is not a folder.")
        files = list_images(root)
        with self._lock:
            for f in files:
                e = ImageEntry(
                    self._id("file:" + str(f.resolve())), str(f.relative_to(root)), "folder", lambda f=f: load_image(f)
                )
                self._items[e.id] = e
        return len(files)

    def add_array(self, name: str, array: np.ndarray, *, source: str = "upload") -> ImageEntry:
        """Add a decoded image (an upload); its id comes from its pixels and shape, so the same file twice is one
        entry."""
        a = np.ascontiguousarray(array)
        # the shape is part of the identity: a 4x6 and a 6x4 image of the same bytes are two images
        digest = hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()
        e = ImageEntry(self._id(f"{source}:{digest}"), name, source, lambda: array, array)
        with self._lock:
            self._items.pop(e.id, None)
            self._items[e.id] = e
            uploads = [k for k, v in self._items.items() if v.source == "upload"]
            for k in uploads[: max(0, len(uploads) - MAX_UPLOADS)]:
                del self._items[k]
        return e

    def get(self, image_id: str) -> ImageEntry | None:
        """The entry for an id, or ``None`` (anything that is not a known 12-hex id, traversal included)."""
        if not isinstance(image_id, str) or not _ID.match(image_id):
            return None
        with self._lock:
            return self._items.get(image_id)

    def list(self) -> list[ImageEntry]:
        """All entries, bundled first, then folder images, then uploads (oldest first)."""
        with self._lock:
            return list(self._items.values())


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class ActivationCache:
    """A least-recently-used map from a key (an image id) to tensors, capped in bytes.

    ``bytes`` is the sum of the stored tensors' sizes; an entry larger than the whole cap is not kept.
    Thread-safe.
    """

    def __init__(self, limit_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if limit_bytes < 0:
            raise InputError(f"the cache limit must be >= 0 bytes, got {limit_bytes}.")
        self.limit_bytes = int(limit_bytes)
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def get(self, key: str) -> Any | None:
        """The value (marked most recent), or ``None``."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: Any) -> None:
        """Store ``value``, evicting least-recent entries until the total fits the cap."""
        size = _nbytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.limit_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.limit_bytes and self._items:
                _, (_, s) = self._items.popitem(last=False)
                self.bytes -= s

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)


class Cancelled(Exception):
    """Raised inside a job's progress callback when the job was cancelled."""


@dataclass
class Job:
    """A background computation with progress (``done``/``total`` steps), cancellable between steps."""

    id: str
    kind: str
    params: dict[str, Any]
    status: str = "queued"  # queued | running | done | error | cancelled
    done: int = 0
    total: int = 0
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def progress(self, step: int, total: int | None) -> None:
        """The callback handed to the computation: records progress, raises :class:`Cancelled` when asked."""
        self.done = int(step)
        if total is not None:
            self.total = int(total)
        if self.cancel_event.is_set():
            raise Cancelled()

    def public(self) -> dict[str, Any]:
        """The job's JSON (no result payload)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "error": self.error,
        }


class JobRunner:
    """Runs jobs one at a time on a worker thread (model calls are serialized anyway), at most
    ``max_queued`` waiting; finished results are kept by key so a repeated request is instant.

    Example:
        >>> r = JobRunner(max_queued=2)
        >>> j = r.submit("demo", {"n": 1}, key="demo:1", fn=lambda job: 41 + 1)
        >>> r.wait(j.id, timeout=5).result
        42
        >>> r.submit("demo", {"n": 1}, key="demo:1", fn=lambda job: 0).result   # cached by key
        42
        >>> r.close()
    """

    def __init__(self, max_queued: int = 4) -> None:
        self.max_queued = max_queued
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._by_key: dict[str, str] = {}
        self._queue: list[tuple[Job, Callable[[Job], Any]]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="convlens-serve-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, params: dict[str, Any], *, key: str, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn(job)`` unless a job with ``key`` is queued, running or done (then that job is returned)."""
        with self._cv:
            old = self._jobs.get(self._by_key.get(key, ""))
            if old is not None and old.status in ("queued", "running", "done"):
                return old
            waiting = sum(1 for j, _ in self._queue)
            if waiting >= self.max_queued:
                raise InputError(f"{waiting} jobs are already waiting; cancel one or wait for it to finish.")
            job = Job(uuid.uuid4().hex[:12], kind, params)
            self._jobs[job.id] = job
            self._by_key[key] = job.id
            while len(self._jobs) > 256:  # forget the oldest finished jobs
                jid, j = next(iter(self._jobs.items()))
                if j.status in ("queued", "running"):
                    break
                del self._jobs[jid]
            self._queue.append((job, fn))
            self._cv.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        """A job by id, or ``None``."""
        with self._cv:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop (a queued job never starts; a running one stops at its next step)."""
        with self._cv:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            job.cancel_event.set()
            if job.status == "queued":
                self._queue = [(j, f) for j, f in self._queue if j is not job]
                job.status = "cancelled"
            self._cv.notify_all()
            return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job finishes (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            job = self._jobs[job_id]
            while job.status in ("queued", "running"):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return job

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job, fn = self._queue.pop(0)
                job.status = "running"
            try:
                result = fn(job)
                status, err = "done", None
            except Cancelled:
                result, status, err = None, "cancelled", None
            except Exception as e:  # a job's failure is reported in its JSON; the server keeps serving
                result, status, err = None, "error", str(e) or type(e).__name__
            with self._cv:
                job.result, job.status, job.error = result, status, err
                self._cv.notify_all()

    def close(self) -> None:
        """Cancel everything and stop the worker."""
        with self._cv:
            self._closed = True
            for j, _ in self._queue:
                j.status = "cancelled"
            self._queue.clear()
            for j in self._jobs.values():
                j.cancel_event.set()
            self._cv.notify_all()
        self._thread.join(timeout=5)


def make_temp_dir() -> Path:
    """A private temp folder for uploads (removed by :func:`remove_temp_dir`)."""
    return Path(tempfile.mkdtemp(prefix="convlens-serve-"))


def remove_temp_dir(path: Path) -> None:
    """Remove the folder made by :func:`make_temp_dir`."""
    shutil.rmtree(path, ignore_errors=True)
