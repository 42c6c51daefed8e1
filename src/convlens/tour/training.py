"""The tour's training sections. Training: augmentation, transfer learning, freezing, fine-tuning, vanishing gradients.

Each function computes its topic live through the public convlens API (no canned numbers) and
returns a :class:`~convlens.tour.core.Body`; :mod:`convlens.tour.course` lists them in course order.
"""

from __future__ import annotations

from convlens.report.page import Table, TourFigure  # noqa: F401
from convlens.tour.core import Body, TourContext

__all__ = ["augmentation_preview", "transfer_learning", "freezing", "fine_tuning", "vanishing_gradients"]


def _lfw_config(ctx: TourContext):
    from convlens.train import TrainConfig

    return TrainConfig(
        data="lfw",
        model="efficientnet_lite0",
        epochs=ctx.pick(quick=3, full=6),
        image_size=ctx.pick(quick=32, full=64),
        batch_size=32,
        seed=ctx.seed,
        device=ctx.device,
    )


def _lfw_runs(ctx: TourContext) -> dict:
    """One training run per strategy on lfw (shared by q14-q16): strategy -> TrainRun."""
    if "lfw_runs" not in ctx.cache:
        import dataclasses

        from convlens.train.run import run_training, strategy_dirname

        cfg = _lfw_config(ctx)
        strategies = ctx.pick(
            quick=["scratch", "features", "finetune"],
            full=["scratch", "scratch+aug", "features", "frozen+aug", "finetune"],
        )
        runs = {}
        for s in strategies:
            runs[s] = run_training(dataclasses.replace(cfg, strategy=s), ctx.workdir / "lfw" / strategy_dirname(s))
        ctx.cache["lfw_runs"] = runs
    return ctx.cache["lfw_runs"]


def _train_cli(ctx: TourContext, strategies: str) -> str:
    cfg = _lfw_config(ctx)
    return f"convlens train --data lfw --compare {strategies} --epochs {cfg.epochs} --image-size {cfg.image_size} --seed {cfg.seed} --out runs/lfw"


def augmentation_preview(ctx: TourContext) -> Body:
    """q13: What does augmentation make of one image?"""
    import numpy as np
    import torch
    from PIL import Image

    from convlens.data import Augment, sample_seed
    from convlens.plot import image_grid

    n = ctx.pick(quick=8, full=16)
    aug = Augment(
        rotation=30, width_shift=0.15, height_shift=0.15, shear=15, zoom=0.2, horizontal_flip=True, fill_mode="reflect"
    )
    img = np.array(Image.fromarray(ctx.image("chelsea")).resize((192, 128), Image.BILINEAR))
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    tiles, rows = [img], []
    for i in range(n):
        g = torch.Generator().manual_seed(sample_seed(ctx.seed, 0, i))
        p = aug.sample(g, tuple(x.shape[-2:]))
        out = aug.apply(x, p)
        tiles.append(out.permute(1, 2, 0).numpy())
        rows.append(
            [
                i + 1,
                round(p.angle, 1),
                round(p.translate[0], 1),
                round(p.translate[1], 1),
                round(p.shear, 1),
                round(p.scale, 3),
                p.flip,
            ]
        )
    fig = image_grid(
        tiles, titles=["original"] + [f"#{i + 1}" for i in range(n)], ncols=min(len(tiles), 5), tile_inches=1.9
    )
    diffs = [float(np.abs(t.astype(np.float64) - img).mean()) for t in tiles[1:]]
    return Body(
        results={
            "options": aug.to_dict(),
            "variants": n,
            "mean |variant - original| (0..255)": round(float(np.mean(diffs)), 2),
            "distinct variants": len({t.tobytes() for t in tiles[1:]}),
        },
        tables=[
            Table(
                ["#", "angle (deg)", "shift x (px)", "shift y (px)", "shear (deg)", "zoom", "flip"],
                rows,
                caption="parameters drawn per image",
            )
        ],
        figures=[TourFigure("One photo, several random draws of the Keras-style augmentation.", fig)],
        explanation=(
            "Augmentation draws new random parameters for every image each time it is used (rotation, shifts, "
            "shear, zoom, flip), so a small training set looks bigger and more varied: the network cannot memorise "
            "exact pixels and learns features that survive those changes. It helps most when data is scarce, and "
            "only for transformations that keep the label (a flipped cat is still a cat)."
        ),
        api=(
            "from convlens.data import Augment\n"
            "aug = Augment(rotation=30, width_shift=0.15, height_shift=0.15, shear=15, zoom=0.2, horizontal_flip=True, fill_mode='reflect')\n"
            "aug(image_chw_uint8, torch.Generator().manual_seed(0))"
        ),
        cli="convlens augment chelsea.png --n 16 --options rotation=30,shift=0.15,shear=15,zoom=0.2,flip=true,fill_mode=reflect --out grid.png",
        files={"chelsea.png": ctx.image("chelsea")},
    )


def transfer_learning(ctx: TourContext) -> Body:
    """q14: On a small dataset, do pretrained features beat training from scratch?"""
    from convlens.plot.train import comparison_plot

    runs = _lfw_runs(ctx)
    cfg = _lfw_config(ctx)
    first = next(iter(runs.values()))
    rows = [
        [
            s,
            r.result.epochs_done,
            r.result.train_loss,
            r.result.val_loss,
            r.result.val_accuracy,
            r.result.images_per_s,
            r.seconds,
        ]
        for s, r in runs.items()
    ]
    acc = {s: r.result.val_accuracy for s, r in runs.items()}
    best = max(acc, key=acc.get)
    return Body(
        results={
            "data": f"lfw: {first.data.get('train', '?')} train / {first.data.get('val', '?')} val images, classes {first.classes}",
            "backbone": f"{cfg.model} (ImageNet-pretrained, embedded), inputs {cfg.image_size}x{cfg.image_size}",
            "epochs": cfg.epochs,
            "val accuracy": acc,
            "best strategy": best,
            "pretrained features beat scratch": bool(acc.get("features", 0) > acc.get("scratch", 1)),
        },
        tables=[
            Table(
                ["strategy", "epochs", "train loss", "val loss", "val accuracy", "images/s", "seconds"],
                rows,
                caption="same data, same backbone, same seed",
            )
        ],
        figures=[
            TourFigure(
                "Validation curves per strategy.",
                comparison_plot({s: r.history for s, r in runs.items()}, title=f"{cfg.model} on lfw"),
            )
        ],
        explanation=(
            "lfw here is a genuinely small task: a few hundred 25x25 images of faces vs non-faces. Training a whole "
            "EfficientNet from random weights on it ('scratch') has far more parameters than examples and barely "
            "gets past chance in a few epochs. Transfer learning reuses the network trained on ImageNet: its "
            "convolutional base already computes general features (edges, textures, parts), so a new linear head "
            "trained on those features ('features') learns the task from few examples and in seconds, because the "
            "frozen base runs once and its outputs are cached. These numbers were measured just now; what they show "
            "is what this run gave."
        ),
        api=(
            "from convlens.train import TrainConfig\nfrom convlens.train.run import compare\n"
            f"compare(['scratch', 'features', 'finetune'], TrainConfig(data='lfw', epochs={cfg.epochs}, image_size={cfg.image_size}), 'runs/lfw')"
        ),
        cli=_train_cli(ctx, ",".join(runs)),
    )


def freezing(ctx: TourContext) -> Body:
    """q15: Why freeze the pretrained base while a new head trains, and does it stay unchanged?"""
    import torch

    from convlens.train import base_stages

    runs = _lfw_runs(ctx)
    run = runs["finetune"]
    cfg = run.config
    pretrained = ctx.model().model.state_dict()
    trained = run.model.state_dict()
    stages = base_stages(run.model, run.head_name, cfg.image_size)
    n_unfrozen = min(cfg.unfreeze, len(stages))
    rows = []
    frozen_ok, unfrozen_moved = True, True
    for k, names in enumerate(stages):
        unfrozen = k >= len(stages) - n_unfrozen
        prefixes = {n.rsplit(".", 1)[0] for n in names}
        keys = [
            key
            for key in trained
            if key in pretrained and (key in names or any(key.startswith(p + ".") for p in prefixes))
        ]
        diffs = [
            float((trained[key].float() - pretrained[key].float().to(trained[key].device)).abs().max())
            for key in keys
            if trained[key].shape == pretrained[key].shape
        ]
        bitwise = all(torch.equal(trained[key].cpu(), pretrained[key].cpu()) for key in keys)
        span = f"{names[0].rsplit('.', 1)[0]} .. {names[-1].rsplit('.', 1)[0]}" if names else ""
        rows.append(
            [k, span, len(keys), "unfrozen (step 4)" if unfrozen else "frozen", bitwise, max(diffs) if diffs else 0.0]
        )
        if unfrozen:
            unfrozen_moved = unfrozen_moved and not bitwise
        else:
            frozen_ok = frozen_ok and bitwise
    return Body(
        results={
            "run": f"finetune on lfw, {cfg.epochs} epochs, top {n_unfrozen} of {len(stages)} base stages unfrozen after the head stage",
            "frozen stages bitwise unchanged (weights and BatchNorm statistics)": frozen_ok,
            "unfrozen stages changed": unfrozen_moved,
            "head": run.head_name,
        },
        tables=[
            Table(
                [
                    "stage",
                    "modules",
                    "tensors (incl. BN buffers)",
                    "role",
                    "bitwise equal to pretrained",
                    "max |change|",
                ],
                rows,
                caption="the fine-tuned model compared tensor by tensor with the pretrained one",
            )
        ],
        explanation=(
            "A new head starts from random weights, so its first gradients are large and noisy. If the pretrained base "
            "were trainable from the start, those gradients would flow back and overwrite the features that make "
            "transfer work. Freezing means: requires_grad=False on the base, frozen parameters not even given to the "
            "optimizer (so weight decay cannot move them), and frozen BatchNorm layers kept in eval mode (otherwise "
            "their running statistics drift even without gradients). The table checks this on the run above: every "
            "frozen stage is bit-for-bit the pretrained one, while the unfrozen top stages moved."
        ),
        api="from convlens.train import set_trainable, frozen_modules, apply_train_mode\nfrom convlens.train import TrainConfig, fit\nrun = fit(TrainConfig(data='lfw', strategy='finetune'))",
        cli=_train_cli(ctx, "features,frozen+aug"),
    )


def fine_tuning(ctx: TourContext) -> Body:
    """q16: Does the five-step fine-tuning recipe improve on frozen features?"""
    from convlens.plot.train import learning_curves
    from convlens.train import plan_stages

    runs = _lfw_runs(ctx)
    run = runs["finetune"]
    cfg = run.config
    stages = plan_stages(cfg)
    rows = [
        [h["epoch"], h.get("stage"), h.get("lr"), h["train_loss"], h["val_loss"], h["val_accuracy"]]
        for h in run.history
    ]
    feat = runs.get("features")
    return Body(
        results={
            "stages": [f"{s.name}: {s.epochs} epoch(s)" for s in stages],
            "unfrozen top stages": cfg.unfreeze,
            "learning rates": f"head {cfg.lr:g} in step 3; step 5: head x{cfg.finetune_lr:g}, unfrozen stages x{cfg.finetune_lr:g} x{cfg.layer_decay:g}^k",
            "val accuracy, features only": feat.result.val_accuracy if feat else None,
            "val accuracy, fine-tuned": run.result.val_accuracy,
        },
        tables=[
            Table(
                ["epoch", "stage", "lr (last group)", "train loss", "val loss", "val accuracy"],
                rows,
                caption="the fine-tuning run, epoch by epoch",
            )
        ],
        figures=[
            TourFigure(
                "Learning curves of the fine-tuning run; the dashed line marks the switch from head-only to joint training.",
                learning_curves(run.history, title="finetune on lfw"),
            )
        ],
        explanation=(
            "The recipe: (1) put a new head on the pretrained base, (2) freeze the base, (3) train the head until it "
            "is reasonable, (4) unfreeze the top stages of the base (the most task-specific features), (5) train them "
            "together with the head at a LOW learning rate, lower still for deeper stages, so the pretrained features "
            "adapt gently instead of being destroyed. Step 3 first is what makes step 5 safe: by then the head's "
            "gradients are small."
        ),
        api=f"from convlens.train import TrainConfig, fit\nfit(TrainConfig(data='lfw', strategy='finetune', epochs={cfg.epochs}, unfreeze={cfg.unfreeze}))",
        cli=f"convlens train --data lfw --strategy finetune --epochs {cfg.epochs} --unfreeze {cfg.unfreeze} --image-size {cfg.image_size} --out runs/finetune",
    )


def vanishing_gradients(ctx: TourContext) -> Body:
    """q18: Do gradients vanish in deep plain nets, and do residual shortcuts keep them?"""
    from convlens.experiments import vanishing_gradient
    from convlens.plot.vision import vanishing_gradient_figures

    r = vanishing_gradient(quick=ctx.quick, seed=ctx.seed, device=ctx.device)
    rows = []
    for name, v in r.variants.items():
        for i, d in enumerate(r.depths):
            first, last = v.first_layer_grad_norm[i], v.last_layer_grad_norm[i]
            rows.append([name, d, first, last, (last / first) if first else None, v.val_accuracy[i]])
    figs = vanishing_gradient_figures(r)
    return Body(
        results={
            "setup": r.setup,
            "init": r.init,
            "what is measured": r.measures,
            "findings": r.findings,
            "training": f"{r.train_steps} SGD steps, batch {r.batch_size}, lr {r.lr:g}",
        },
        tables=[
            Table(
                ["variant", "depth", "first-layer grad norm", "last-layer grad norm", "last / first", "val accuracy"],
                rows,
                caption="weight-gradient norms at initialization, then brief training",
            )
        ],
        figures=[
            TourFigure(
                f"Gradient norm of every conv layer at initialization, one line per depth ({', '.join(map(str, r.depths))}).",
                figs["grad_norms"],
            ),
            TourFigure("Brief training: loss curves per variant and depth.", figs["training"]),
        ],
        explanation=(
            "Backpropagation multiplies one Jacobian per layer. In a deep plain stack those factors rarely average to "
            "1, so the gradient reaching the first layers shrinks (or, with BatchNorm, can grow) exponentially with "
            "depth, and the early layers cannot learn. A residual block computes x + F(x): its Jacobian is I + dF/dx, "
            "so the identity path carries the gradient back unchanged and the magnitudes stay comparable across depth. "
            "The table shows what this run measured at initialization on digits."
        ),
        api=f"from convlens.experiments import vanishing_gradient\nvanishing_gradient(depths=(8, 20, 56), quick={ctx.quick}, seed={ctx.seed})",
        cli="convlens experiment vanishing-gradient --out exp/vg" + (" --quick" if ctx.quick else "") + " --json",
    )
