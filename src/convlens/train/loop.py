"""The training loop behind every strategy: scratch, scratch+aug, features, frozen+aug, finetune.

One plain loop (no framework): per epoch, a seeded ``DistributedSampler`` order (also with one
process), batches of in-memory images augmented per image, ``AdamW`` on the trainable parameters
only, a cosine learning rate per stage stepped per batch, validation, then a checkpoint.

Strategies (same data, same backbone):

=============  =========================================================================================
scratch        every weight re-initialized (seeded ``reset_parameters``), all trained
scratch+aug    the same with per-image augmentation
features       pretrained base frozen and run ONCE (eval mode, no augmentation); its outputs (the
               head's inputs) are cached under ``RUN_DIR/features/``; only the new head trains on them
frozen+aug     pretrained base frozen (``requires_grad=False``, BatchNorm in eval), head trained on
               augmented images: the base runs every step
finetune       the 5-step recipe: (1) new head on the pretrained base, (2) freeze the base, (3) train
               the head (stage ``head``, ``head_epochs``), (4) unfreeze the top ``unfreeze`` stages,
               (5) train them with the head at a low learning rate (stage ``finetune``: head at
               ``lr * finetune_lr``, unfrozen stage k from the top at ``lr * finetune_lr * layer_decay**k``)
=============  =========================================================================================

Determinism: the loop runs inside ``torch.random.fork_rng`` seeded with ``seed`` (the caller's RNG
is restored afterwards); data order comes from ``(seed, epoch)``, augmentation from
``(seed, epoch, index)``, the head from ``seed``. Same seed, same machine/threads -> same metrics.
Resuming restores weights, optimizer, scheduler and RNG state, so an interrupted run ends where an
uninterrupted one does, across the head -> finetune boundary too.

Example:
    >>> cfg = TrainConfig(data="digits", strategy="features", model="resnet18", epochs=1, image_size=16)
    >>> cfg.validated().strategy
    'features'
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import (
    Augment,
    DatasetSplit,
    ImageDataset,
    augment_for,
    default_augment,
    load_dataset,
)
from convlens.errors import ConvlensError, DataError, InputError, ModelError, RandomWeightsWarning, first_line
from convlens.models.logits import logits as class_scores
from convlens.train import checkpoint as ckpt
from convlens.train.surgery import (
    apply_train_mode,
    base_stages,
    frozen_modules,
    head_removed,
    reinitialize,
    replace_head,
    set_trainable,
    top_stage_groups,
)

__all__ = ["STRATEGIES", "TrainConfig", "Stage", "TrainResult", "TrainRun", "fit", "plan_stages", "default_augment"]

STRATEGIES = ("scratch", "scratch+aug", "features", "frozen+aug", "finetune")

#: Augmentation of the ``+aug`` strategies and ``finetune`` (Keras ImageDataGenerator spirit, a bit milder).
# the one default augmentation lives in convlens.data.augment (the `augment` preview uses it too)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints; a resume must match it).

    Defaults are sized for small data on a CPU: 64 px inputs (lfw is 25 px, digits 8 px: upsampled,
    gray -> 3 channels), 6 epochs, batch 32, AdamW at 1e-3.
    """

    data: str = "lfw"  # 'lfw' | 'digits' | ImageFolder path
    strategy: str = "finetune"
    model: str = "efficientnet_lite0"
    weights: str | None = None
    epochs: int = 6  # total, all stages
    batch_size: int = 32  # global batch (split across DDP processes)
    lr: float = 1e-3
    unfreeze: int = 2  # finetune: top stages unfrozen in step 4
    seed: int = 0
    device: str = "cpu"
    image_size: int = 64
    val_fraction: float = 0.2
    augment: str | None = None  # options string; None = default_augment(data); 'none' = off
    weight_decay: float = 1e-4
    head_epochs: int | None = None  # finetune: epochs of step 3 (default: half, rounded up)
    finetune_lr: float = 0.1  # finetune step 5: LR factor of the head
    layer_decay: float = 0.5  # finetune step 5: LR factor per stage further from the head
    bn_train: bool = (
        False  # finetune step 5: False keeps unfrozen BatchNorm in eval (running stats fixed; Keras advice)
    )

    def validated(self) -> TrainConfig:
        """Check every field at the boundary; returns self.

        Raises:
            InputError: an unknown strategy or an out-of-range number.
        """
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}; got '{self.strategy}'.")
        for name in ("epochs", "batch_size", "image_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("lr", "finetune_lr", "layer_decay"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive number, got {v}.")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if self.unfreeze < 0:
            raise InputError(f"unfreeze must be >= 0 stages, got {self.unfreeze}.")
        if self.strategy == "finetune":
            he = self.head_epochs if self.head_epochs is not None else math.ceil(self.epochs / 2)
            if self.epochs < 2 or not 1 <= he < self.epochs:
                raise InputError(
                    f"finetune needs epochs >= 2 split into head_epochs >= 1 and joint epochs >= 1; "
                    f"got epochs={self.epochs}, head_epochs={self.head_epochs}."
                )
        self.augment_options()  # parse errors surface now
        return self

    def augment_options(self) -> Augment:
        """The augmentation this config uses when a stage augments."""
        return augment_for(self.augment, self.data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Stage:
    """One phase of training: how many epochs, what trains, with augmentation or cached features."""

    name: str
    epochs: int
    trains: str  # 'all' | 'head' | 'top'
    augment: bool
    features: bool = False


def _stretch_cosine(sched: torch.optim.lr_scheduler.CosineAnnealingLR, t_max: int) -> None:
    """Give a loaded cosine schedule a new length ``t_max`` (a resumed run that was extended): each group's
    LR becomes the closed form ``eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2`` at the
    current step ``t``, so the recursive updates that follow trace the longer cosine."""
    if sched.T_max == t_max:
        return
    sched.T_max = t_max
    t = sched.last_epoch
    lrs = [sched.eta_min + (b - sched.eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for b in sched.base_lrs]
    for g, lr in zip(sched.optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr
    sched._last_lr = lrs


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    """The stages of a strategy.

    Example:
        >>> [(s.name, s.epochs, s.trains) for s in plan_stages(TrainConfig(strategy="finetune", epochs=5))]
        [('head', 3, 'head'), ('finetune', 2, 'top')]
    """
    s, e = cfg.strategy, cfg.epochs
    if s == "scratch":
        return [Stage("train", e, "all", False)]
    if s == "scratch+aug":
        return [Stage("train", e, "all", True)]
    if s == "features":
        return [Stage("head", e, "head", False, features=True)]
    if s == "frozen+aug":
        return [Stage("head", e, "head", True)]
    he = cfg.head_epochs if cfg.head_epochs is not None else math.ceil(e / 2)
    return [Stage("head", he, "head", True), Stage("finetune", e - he, "top", True)]


@dataclass
class TrainResult:
    """The final numbers of a run (``--json`` and ``metrics.json``)."""

    strategy: str
    epochs_done: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    images_per_s: float
    #: the base started from trained weights (False for scratch strategies and for a random backbone)
    pretrained: bool = True
    #: accuracy of always answering the most common validation class: the bar a model must clear
    chance_accuracy: float | None = None
    #: val accuracy within 2 points of chance: the run learned nothing usable yet (too short, or a bad setup)
    at_chance: bool = False


@dataclass
class TrainRun:
    """A finished run: the result, per-epoch history, the confusion matrix on validation, the model."""

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.training_html`), images inline."""
        from convlens.plot.html import training_html

        return training_html(self)

    result: TrainResult
    history: list[dict[str, Any]]
    confusion: list[list[int]]
    classes: list[str]
    model: nn.Module
    head_name: str
    config: TrainConfig
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


ProgressFn = Callable[[dict[str, Any]], None]


def _dist() -> tuple[bool, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    on, _, _ = _dist()
    if not on:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    on, _, _ = _dist()
    if on:
        import torch.distributed as dist

        dist.barrier()


def _check_forward(
    model: nn.Module,
    name: str,
    size: int,
    num_classes: int,
    device: torch.device,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """One eval forward of 2 blank ``size`` x ``size`` images before any work: a model that cannot take that
    resolution (a ViT built for 224 px) or does not return ``(N, num_classes)`` logits fails here in one sentence."""
    from convlens.hooks import preserve_state

    with preserve_state(model, train=False), torch.no_grad():
        try:
            out = model(
                normalize(torch.zeros(2, 3, size, size, device=device))
            )  # RGB in, as in training (1-channel: luma)
        except ConvlensError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the user's model is reported in one sentence
            msg = first_line(e).rstrip(".")
            raise ModelError(
                f"model '{name}' cannot run on {size}x{size} images ({msg}); use a --image-size it accepts "
                "(e.g. the model's own input size) or a convolutional backbone."
            ) from None
    scores = class_scores(out, required=False)
    if scores is None or tuple(scores.shape) != (2, num_classes):
        got = tuple(scores.shape) if scores is not None else type(out).__name__
        raise ModelError(
            f"after its head was replaced, model '{name}' must return (N, {num_classes}) logits for the "
            f"{num_classes} classes, got {got}; give a model whose forward returns one logits tensor."
        )


def _lr_record(opt: torch.optim.Optimizer, lr_used: list[list[float]]) -> list[dict[str, Any]]:
    """Each parameter group's learning rate as used in one epoch: at its first and last step and the mean
    over its steps (the cosine schedule moves it every step), with the group's name and parameter count.

    Example:
        >>> opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(3))], "lr": 0.1, "group": "head"}])
        >>> _lr_record(opt, [[0.1], [0.05]])
        [{'group': 'head', 'params': 3, 'lr_start': 0.1, 'lr_end': 0.05, 'lr_mean': 0.07500000000000001}]
    """
    out = []
    for i, g in enumerate(opt.param_groups):
        used = [step[i] for step in lr_used] or [float(g["lr"])]
        out.append(
            {
                "group": str(g.get("group", f"group{i}")),  # checkpoints written before groups were named
                "params": sum(p.numel() for p in g["params"]),
                "lr_start": used[0],
                "lr_end": used[-1],
                "lr_mean": sum(used) / len(used),
            }
        )
    return out


class _Loop:
    def __init__(self, cfg: TrainConfig, data: DatasetSplit, run_dir: Path | None, progress: ProgressFn | None) -> None:
        from convlens.models import load_model

        self.cfg, self.data, self.run_dir, self.progress = cfg, data, run_dir, progress
        if str(cfg.model).lower().endswith(".keras"):
            raise ModelError(
                f"convlens train fine-tunes PyTorch models; train the Keras model '{cfg.model}' in Keras "
                "(model.fit) and inspect it here with predict, summary, cam, activations or filters."
            )
        self.dist_on, self.rank, self.world = _dist()
        if cfg.batch_size % self.world:
            raise InputError(f"batch_size {cfg.batch_size} must be divisible by the {self.world} processes.")
        self.device = torch.device(cfg.device)
        with warnings.catch_warnings():  # training says below, once, what random weights mean for it
            warnings.simplefilter("ignore", RandomWeightsWarning)
            bundle = load_model(cfg.model, weights=cfg.weights, device=self.device)
        scratch = cfg.strategy.startswith("scratch")
        if not bundle.pretrained and not scratch:
            warnings.warn(
                f"strategy '{cfg.strategy}' on model '{bundle.meta.name}' with RANDOM weights is NOT transfer "
                "learning: the base computes random features, not ImageNet ones; pass --weights FILE with "
                "pretrained weights, use the embedded efficientnet_lite0, or train a scratch strategy.",
                RandomWeightsWarning,
                stacklevel=2,
            )
        self.pretrained = bundle.pretrained and not scratch
        self.model = bundle.model
        if getattr(self.model, "aux_logits", False):
            # inception_v3 is built with its auxiliary classifier, as torchvision builds it (its checkpoints
            # hold it); the loss here reads the main logits only, and the aux branch cannot run below ~300 px
            # in train mode (its 5x5 conv meets a 1x1-3x3 map): it is removed for training, as torchvision's
            # aux_logits=False does (the saved weights then have no aux keys; load_model accepts both)
            self.model.aux_logits = False
            for head in ("AuxLogits", "aux1", "aux2"):
                if getattr(self.model, head, None) is not None:
                    setattr(self.model, head, None)
        self.normalize = bundle.preprocess.normalize
        self.head_name, _ = replace_head(self.model, data.num_classes, seed=cfg.seed)
        if cfg.strategy.startswith("scratch"):
            reinitialize(self.model, seed=cfg.seed)
        _check_forward(self.model, cfg.model, cfg.image_size, data.num_classes, self.device, self.normalize)
        self.stages = plan_stages(cfg)
        self.total_epochs = sum(s.epochs for s in self.stages)
        self.aug = cfg.augment_options()
        self.train_plain = data.train.with_augment(None)
        self.train_aug = data.train.with_augment(self.aug)
        self.feats: dict[str, torch.Tensor] | None = None
        self.extract_seconds = 0.0
        self.history: list[dict[str, Any]] = []

    # -- helpers ---------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None and self.rank == 0:
            self.progress(event)

    def _extend(self, saved: dict[str, Any], done: int) -> None:
        """Resume with a larger ``epochs``: the epochs already run keep their stages, and the extra ones
        lengthen the last stage (its cosine schedule is stretched to the new length). Fewer epochs
        than the checkpoint planned, or another head/joint split, is a DataError."""
        cfg = self.cfg
        old_epochs = int(saved.get("epochs", cfg.epochs))
        try:
            old_plan = plan_stages(TrainConfig(**{**cfg.to_dict(), **saved}))
        except TypeError:  # a checkpoint written by another version: compare what it has
            old_plan = self.stages
        if cfg.epochs < old_epochs:
            raise DataError(
                f"the checkpoint in '{self.run_dir}' plans {old_epochs} epochs ({done} done); --epochs {cfg.epochs} "
                f"cannot shorten it: resume with --epochs >= {old_epochs}, or train into a new --out."
            )
        if cfg.head_epochs is not None and len(old_plan) > 1 and cfg.head_epochs != old_plan[0].epochs:
            raise DataError(
                f"the checkpoint in '{self.run_dir}' trains the head for {old_plan[0].epochs} epochs, not "
                f"{cfg.head_epochs}; resume without --head-epochs (extra epochs go to the last stage)."
            )
        plan = [replace(st) for st in old_plan]
        plan[-1] = replace(plan[-1], epochs=plan[-1].epochs + cfg.epochs - old_epochs)
        if len(plan) > 1:  # record the split itself, so a later resume keeps it whatever --epochs says
            self.cfg = cfg = replace(cfg, head_epochs=plan[0].epochs)
        self.stages = plan
        self.total_epochs = sum(st.epochs for st in plan)

    def _stage_at(self, epoch: int) -> int:
        acc = 0
        for i, s in enumerate(self.stages):
            acc += s.epochs
            if epoch < acc:
                return i
        return len(self.stages) - 1

    def _head_params(self) -> list[str]:
        return [
            n for n, _ in self.model.named_parameters() if n == self.head_name or n.startswith(self.head_name + ".")
        ]

    def _configure(self, stage: Stage) -> tuple[nn.Module, torch.optim.Optimizer, list[str]]:
        """Freeze per stage; build the optimizer over trainable parameters ONLY (param groups with LRs)."""
        cfg = self.cfg
        params = dict(self.model.named_parameters())
        head = self._head_params()
        if stage.trains == "all":
            groups = [{"params_names": list(params), "lr": cfg.lr, "group": "all"}]
        elif stage.trains == "head":
            groups = [{"params_names": head, "lr": cfg.lr, "group": "head"}]
        else:
            stages = base_stages(self.model, self.head_name, cfg.image_size)
            top = top_stage_groups(stages, cfg.unfreeze, decay=cfg.layer_decay)
            base_lr = cfg.lr * cfg.finetune_lr
            # named by distance from the head: top-1 is the topmost unfrozen stage (LR x layer_decay)
            groups = [
                {"params_names": list(g.names), "lr": base_lr * g.lr_factor, "group": f"top-{len(top) - i}"}
                for i, g in enumerate(top)
            ]
            groups.append({"params_names": head, "lr": base_lr, "group": "head"})
        trainable = [n for g in groups for n in g["params_names"]]
        set_trainable(self.model, trainable)
        frozen = frozen_modules(self.model)
        if stage.trains == "top" and not cfg.bn_train:
            # small batches of a new domain would overwrite the pretrained running statistics; keep them
            # (gamma/beta still train). Observed on lfw (lite0, 64 px, 2+2 epochs) with BN in train mode:
            # val accuracy fell from 0.975 to 0.90 right after unfreezing.
            frozen += [
                n
                for n, m in self.model.named_modules()
                if isinstance(m, nn.modules.batchnorm._NormBase) and n not in frozen
            ]
        opt_groups = [
            {
                "params": [params[n] for n in g["params_names"]],
                "lr": g["lr"],
                "names": list(g["params_names"]),
                "group": g["group"],
            }
            for g in groups
            if g["params_names"]
        ]
        opt = torch.optim.AdamW(opt_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        net: nn.Module = self.model.get_submodule(self.head_name) if stage.features else self.model
        if self.dist_on:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = (
                [self.device.index if self.device.index is not None else torch.cuda.current_device()]
                if self.device.type == "cuda"
                else None
            )
            net = DDP(net, device_ids=ids)
        return net, opt, frozen

    def _features(self) -> dict[str, torch.Tensor]:
        """Run the frozen base once over train and val (eval mode, no grad); cached on disk per base+data."""
        if self.feats is not None:
            return self.feats
        import hashlib

        cfg = self.cfg
        key = hashlib.sha256(
            repr(
                (
                    cfg.model,
                    cfg.weights,
                    cfg.image_size,
                    cfg.seed,
                    self.data.train.fingerprint(),
                    self.data.val.fingerprint(),
                )
            ).encode()
        ).hexdigest()[:16]
        path = self.run_dir / "features" / f"features-{key}.safetensors" if self.run_dir is not None else None
        t0 = time.perf_counter()
        if path is None or not path.is_file():
            if self.rank == 0 or path is None:
                feats = {"train": self._extract(self.train_plain), "val": self._extract(self.data.val)}
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ckpt.save_weights(path, feats, {"model": cfg.model, "image_size": str(cfg.image_size)})
            _barrier()
        if path is not None:
            from safetensors.torch import load_file

            feats = load_file(str(path), device="cpu")
        self.feats = {k: v.to(self.device) for k, v in feats.items()}
        self.extract_seconds = time.perf_counter() - t0
        self._emit({"event": "features", "shape": list(self.feats["train"].shape), "seconds": self.extract_seconds})
        return self.feats

    @torch.no_grad()
    def _extract(self, ds: ImageDataset) -> torch.Tensor:
        out = []
        with head_removed(self.model, self.head_name) as base:
            was = base.training
            base.eval()
            try:
                for i in range(0, len(ds), 2 * self.cfg.batch_size):
                    x, _ = ds.batch(list(range(i, min(len(ds), i + 2 * self.cfg.batch_size))))
                    f = base(self.normalize(x.to(self.device)))
                    out.append(f.flatten(1).float().cpu())
            finally:
                base.train(was)
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, features: bool) -> tuple[float, float, torch.Tensor]:
        """Validation loss, accuracy and confusion matrix (rows: true class, columns: predicted)."""
        k = self.data.num_classes
        conf = torch.zeros(k, k, dtype=torch.long)
        loss_sum, n = 0.0, 0
        was = self.model.training
        self.model.eval()
        try:
            bs = 2 * self.cfg.batch_size
            for i in range(0, len(self.data.val), bs):
                idx = list(range(i, min(len(self.data.val), i + bs)))
                y = self.data.val.targets[idx].to(self.device)
                if features:
                    logits = self.model.get_submodule(self.head_name)(self.feats["val"][idx])
                else:
                    x, _ = self.data.val.batch(idx)
                    logits = class_scores(self.model(self.normalize(x.to(self.device))))
                loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
                n += len(idx)
                pred = logits.argmax(1)
                conf += torch.bincount((y * k + pred).cpu(), minlength=k * k).view(k, k)
        finally:
            self.model.train(was)
        return loss_sum / max(n, 1), float(conf.diag().sum()) / max(n, 1), conf

    # -- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainRun:
        from torch.utils.data.distributed import DistributedSampler

        cfg = self.cfg
        start_epoch = 0
        pending: tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None = None
        if resume:
            assert self.run_dir is not None
            model_sd, optim_t, state = ckpt.load_checkpoint(self.run_dir)
            saved = dict(state.get("config", {}))
            self._extend(saved, int(state["epoch"]))
            free = ("device", "epochs", "head_epochs")  # checked by _extend: a run may grow, never change its past
            mismatch = [k for k, v in cfg.to_dict().items() if k not in free and saved.get(k) != v]
            if mismatch:
                k = mismatch[0]
                raise DataError(
                    f"the checkpoint in '{self.run_dir}' was made with {k}={saved.get(k)!r}, not {getattr(cfg, k)!r}; "
                    "resume with the same options or use a new --out."
                )
            then = state.get("data")  # absent in checkpoints written before it was recorded
            if then is not None and then != self._data_id():
                now = self._data_id()
                raise DataError(
                    f"the data in '{cfg.data}' changed since the checkpoint in '{self.run_dir}' ({then['train']} train / "
                    f"{then['val']} val images then, {now['train']} / {now['val']} now, or the images differ); "
                    "restore it, or train into a new --out without --resume."
                )
            self.model.load_state_dict(model_sd)
            start_epoch = int(state["epoch"])
            self._resumed_from = start_epoch
            self.history = list(state.get("history", []))
            pending = (int(state["stage"]), optim_t, state)
            ckpt.set_rng_state(state["rng"])
        elif self.run_dir is not None and self.rank == 0:
            (self.run_dir / ckpt.STATE_FILE).unlink(missing_ok=True)  # a fresh run never resumes an old one
        self._emit(dict(self.data.summary(), event="data"))
        t_start = time.perf_counter()
        n_train = len(self.data.train)
        local_bs = cfg.batch_size // self.world
        sampler = DistributedSampler(
            range(n_train), num_replicas=self.world, rank=self.rank, shuffle=True, seed=cfg.seed
        )
        current = -1
        net: nn.Module = self.model
        opt: torch.optim.Optimizer | None = None
        sched: torch.optim.lr_scheduler.LRScheduler | None = None
        frozen: list[str] = []
        steps = math.ceil(len(sampler) / local_bs)
        for epoch in range(start_epoch, self.total_epochs):
            si = self._stage_at(epoch)
            stage = self.stages[si]
            if si != current:
                net, opt, frozen = self._configure(stage)
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.epochs * steps)
                if pending is not None and pending[0] == si:  # resume inside this stage: continue its optimizer
                    _, optim_t, state = pending
                    opt.load_state_dict(ckpt.merge_optimizer_state(optim_t, state["optimizer"]))
                    sched.load_state_dict(state["scheduler"])
                    _stretch_cosine(sched, stage.epochs * steps)  # an extended last stage: its longer cosine
                pending = None
                current = si
                self._emit(
                    {
                        "event": "stage",
                        "stage": stage.name,
                        "epochs": stage.epochs,
                        "trains": stage.trains,
                        "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                        "frozen_modules": len(frozen),
                    }
                )
            if stage.features:
                self._features()
            ds = self.train_aug if stage.augment else self.train_plain
            ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            order = list(sampler)
            apply_train_mode(self.model, frozen)
            t0 = time.perf_counter()
            loss_sum = correct = seen = 0.0
            lr_used: list[list[float]] = []  # per step taken: each group's LR as opt.step() applied it
            for step in range(steps):
                idx = order[step * local_bs : (step + 1) * local_bs]
                if len(idx) < 2 and steps > 1:
                    continue  # a last batch of one sample: BatchNorm cannot train on it; skipped
                if stage.features:
                    x = self.feats["train"][idx]
                    y = self.data.train.targets[idx].to(self.device)
                else:
                    xb, yb = ds.batch(idx)
                    x, y = self.normalize(xb.to(self.device, non_blocking=True)), yb.to(self.device, non_blocking=True)
                logits = class_scores(net(x))  # tensor, (logits, aux) tuple, dict or .logits
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                lr_used.append([float(g["lr"]) for g in opt.param_groups])
                opt.step()
                sched.step()
                lv = float(loss.detach())
                loss_sum += lv * len(idx)
                correct += float((logits.detach().argmax(1) == y).sum())
                seen += len(idx)
                self._emit(
                    {
                        "event": "step",
                        "epoch": epoch + 1,
                        "epochs": self.total_epochs,
                        "step": step + 1,
                        "steps": steps,
                        "loss": lv,
                    }
                )
            loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], self.device)
            secs = time.perf_counter() - t0
            if stage.features and epoch == start_epoch:
                secs += self.extract_seconds  # the one-time base pass is part of this strategy's cost
            val_loss, val_acc, _ = self.evaluate(stage.features)
            lr_groups = _lr_record(opt, lr_used)
            rec = {
                "epoch": epoch + 1,
                "stage": stage.name,
                # the head's LR at the epoch's first step (the head is always the last group; "all" in scratch)
                "lr": lr_groups[-1]["lr_start"] if lr_groups else float(opt.param_groups[-1]["lr"]),
                "lr_groups": lr_groups,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": secs,
                "images": seen,
                "images_per_s": seen / secs if secs > 0 else float("nan"),
            }
            self.history.append(rec)
            self._emit(dict(rec, event="epoch", epochs=self.total_epochs))
            if self.run_dir is not None and self.rank == 0:
                self._save(epoch + 1, si, opt, sched)
        stage_last = self.stages[self._stage_at(max(0, self.total_epochs - 1))]
        if stage_last.features:
            self._features()
        val_loss, val_acc, conf = self.evaluate(stage_last.features)
        train_loss = self.history[-1]["train_loss"] if self.history else float("nan")
        total_img = sum(h["images"] for h in self.history)
        total_s = sum(h["seconds"] for h in self.history)
        per_class = conf.sum(1)  # validation images per true class
        chance = float(per_class.max() / per_class.sum()) if int(per_class.sum()) > 0 else None
        result = TrainResult(
            cfg.strategy,
            len(self.history),
            float(train_loss),
            float(val_loss),
            float(val_acc),
            float(total_img / total_s) if total_s > 0 else float("nan"),
            self.pretrained,
            chance,
            bool(chance is not None and val_acc <= chance + 0.02),
        )
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.eval()
        return TrainRun(
            result,
            self.history,
            conf.tolist(),
            self.data.classes,
            self.model,
            self.head_name,
            cfg,
            self.data.summary(),
            time.perf_counter() - t_start,
        )

    def _data_id(self) -> dict[str, Any]:
        """Sizes and content hashes of the train/val images (computed once): a resumed run must see the same data."""
        if getattr(self, "_data_id_cache", None) is None:
            tr, va = self.data.train, self.data.val
            self._data_id_cache = {
                "train": len(tr),
                "val": len(va),
                "train_hash": tr.fingerprint(),
                "val_hash": va.fingerprint(),
            }
        return self._data_id_cache

    def _save(self, epoch: int, stage: int, opt: torch.optim.Optimizer, sched: Any) -> None:
        tensors, rest = ckpt.split_optimizer_state(opt.state_dict())
        state = {
            "format": 1,
            "epoch": epoch,
            "stage": stage,
            "stage_name": self.stages[stage].name,
            "total_epochs": self.total_epochs,
            "config": self.cfg.to_dict(),
            "optimizer": rest,
            "scheduler": sched.state_dict(),
            "rng": ckpt.rng_state(),
            "history": self.history,
            "data": self._data_id(),
        }
        ckpt.save_checkpoint(self.run_dir, self.model.state_dict(), tensors, state)


def fit(
    config: TrainConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    data: DatasetSplit | None = None,
) -> TrainRun:
    """Train ``config.model`` on ``config.data`` with ``config.strategy``; checkpoint each epoch into ``run_dir``.

    Under ``torchrun`` (an initialized process group) the model is wrapped in
    DistributedDataParallel, each process takes ``batch_size / world_size`` samples per step from a
    ``DistributedSampler``, and only rank 0 writes checkpoints.

    Args:
        run_dir: where checkpoints (and the ``features`` cache) go; ``None`` trains in memory only.
        resume: continue from the checkpoint in ``run_dir`` (a DataError when there is none).
        progress: called (rank 0 only) with event dicts: ``data``, ``stage``, ``features``, ``step``, ``epoch``.
        data: an already loaded dataset (else ``load_dataset(config.data, ...)``).

    Example:
        >>> run = fit(TrainConfig(data="digits", strategy="features", model="resnet18", epochs=1, image_size=16))
        >>> run.result.epochs_done, len(run.confusion)
        (1, 10)
    """
    cfg = config.validated()
    rd = Path(run_dir) if run_dir is not None else None
    if resume and (rd is None or not ckpt.has_checkpoint(rd)):
        raise DataError(f"--resume needs a run folder with a checkpoint; '{rd}' has none (start without --resume).")
    try:
        dev = torch.device(cfg.device)
    except (RuntimeError, ValueError):
        raise InputError(f"device must look like cpu, cuda, cuda:1 or mps; got '{cfg.device}'.") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
        raise InputError(f"device '{cfg.device}' requested but this machine has {have}; use --device cpu.")
    if data is None:
        data = load_dataset(cfg.data, image_size=cfg.image_size, val_fraction=cfg.val_fraction, seed=cfg.seed)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)  # local to this run: fork_rng restores the caller's RNG afterwards
        try:
            loop = _Loop(cfg, data, rd, progress)
            return loop.run(resume)
        except ConvlensError:
            raise
        except torch.OutOfMemoryError as e:  # pragma: no cover - depends on the device
            raise InputError(f"out of memory while training ({e}); lower --batch-size or --image-size.") from None
