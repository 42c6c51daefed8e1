"""CLI commands for the 'train' concern: ``train`` (one strategy or ``--compare``) and ``augment``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from convlens.cli.common import console, ensure_out_dir, out_file, prepare_out_file, print_json
from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT
from convlens.errors import InputError


class _Progress:
    """Rich progress bar on stderr fed by the training loop's events (no output with --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None
        self.desc = ""
        self.con = console(stderr=True)

    def __enter__(self) -> _Progress:
        return self

    def _start(self) -> None:
        """Start the live bar at the first event (an error before that, e.g. a bad data folder, prints alone)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.con,
            transient=True,
        )
        self.bar.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, ev: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self._start()
        kind = ev["event"]
        if kind == "run":
            self.bar.console.print(f"[bold]strategy {ev['strategy']}[/bold] -> {ev['out']}")
        elif kind == "data":
            line = f"data '{ev['name']}': {len(ev['classes'])} classes, {ev['train']} train / {ev['val']} val images at {ev['image_size']} px"
            if ev["skipped"]:
                line += f"; skipped {ev['skipped']} unreadable file(s): " + ", ".join(
                    s["path"] for s in ev["skipped_files"][:3]
                )
                line += " ..." if ev["skipped"] > 3 else ""
            self.bar.console.print(line)
        elif kind == "stage":
            self.bar.console.print(
                f"stage '{ev['stage']}': {ev['epochs']} epochs, trains {ev['trains']} "
                f"({ev['trainable_params']:,} trainable parameters, {ev['frozen_modules']} modules kept in eval)"
            )
        elif kind == "features":
            self.bar.console.print(f"cached base features {tuple(ev['shape'])} in {ev['seconds']:.1f} s")
        elif kind == "step":
            desc = f"epoch {ev['epoch']}/{ev['epochs']}"
            if self.task is None or self.desc != desc:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(desc, total=ev["steps"], info="")
                self.desc = desc
            self.bar.update(self.task, completed=ev["step"], info=f"loss {ev['loss']:.4f}")
        elif kind == "epoch":
            self.bar.console.print(
                f"epoch {ev['epoch']}/{ev['epochs']} \\[{ev['stage']}]  train loss {ev['train_loss']:.4f} acc {ev['train_accuracy']:.3f}  "
                f"val loss {ev['val_loss']:.4f} acc {ev['val_accuracy']:.3f}  {ev['images_per_s']:.1f} img/s"
            )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``augment``."""

    @app.command("train")
    def train_cmd(
        data: str = typer.Option(
            "lfw", "--data", help="lfw | digits | ImageFolder path (root/class/*.jpg, or root/train + root/val)"
        ),
        strategy: str = typer.Option(
            "finetune", "--strategy", help="scratch | scratch+aug | features | frozen+aug | finetune"
        ),
        compare: str | None = typer.Option(None, "--compare", help="comma-separated strategies to train and compare"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        epochs: int = typer.Option(6, "--epochs", min=1, help="total epochs (finetune: half head-only, half joint)"),
        head_epochs: int | None = typer.Option(
            None, "--head-epochs", min=1, help="finetune: epochs of the head-only stage"
        ),
        batch_size: int = typer.Option(32, "--batch-size", min=1),
        lr: float = typer.Option(
            1e-3, "--lr", help="AdamW learning rate (finetune joint stage: x0.1, deeper stages x0.5 each)"
        ),
        unfreeze: int = typer.Option(2, "--unfreeze", min=0, help="finetune: top stages of the base to unfreeze"),
        image_size: int = typer.Option(
            64, "--image-size", min=8, help="training resolution (images resized, gray -> RGB)"
        ),
        augment: str | None = typer.Option(
            None, "--augment", help="augmentation options (rotation=30,zoom=0.2,...) or 'none'"
        ),
        seed: int = typer.Option(0, "--seed"),
        device: str = DEVICE_OPT,
        out: Path = typer.Option(..., "--out", help="run folder (checkpoints, model, metrics, figures)"),
        resume: bool = typer.Option(
            False, "--resume", help="continue from the checkpoint in --out (a larger --epochs extends the run)"
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="train into an --out that already holds files"),
        json_out: bool = typer.Option(False, "--json", help="print the final metrics as JSON only"),
    ) -> None:
        """Train a classifier on small data: from scratch, with augmentation, on cached features, or by fine-tuning.

        An --out folder that already holds files is refused unless --resume (continue its checkpoint;
        a larger --epochs extends it) or --overwrite (start again in it) is given. Under
        `torchrun --nproc_per_node=N -m convlens train ...` each process is one rank of a
        DistributedDataParallel run (--batch-size is the global batch); rank 0 writes and prints."""

        from convlens.cli.common import check_choice
        from convlens.train import STRATEGIES, TrainConfig
        from convlens.train.dist import process_group
        from convlens.train.run import compare as compare_runs
        from convlens.train.run import parse_strategies, run_training

        check_choice(strategy, STRATEGIES, name="--strategy")
        cfg = TrainConfig(
            data=data,
            strategy=strategy,
            model=model,
            weights=str(weights) if weights else None,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            unfreeze=unfreeze,
            seed=seed,
            device=device,
            image_size=image_size,
            augment=augment,
            head_epochs=head_epochs,
        )
        strategies = parse_strategies(compare) if compare is not None else None
        for s in strategies or [strategy]:
            TrainConfig(**{**cfg.to_dict(), "strategy": s}).validated()
        if resume and overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it: give one of them.")
        if not resume and not overwrite and out.is_dir() and any(out.iterdir()):
            raise InputError(
                f"--out '{out}' already holds files (a previous run?); pass --resume to continue it, "
                "--overwrite to train again into it, or choose a new folder."
            )
        with process_group(device) as (rank_device, rank):  # torchrun: this process is one rank
            if rank_device != device:
                cfg = TrainConfig(**{**cfg.to_dict(), "device": rank_device})
            if rank == 0:
                ensure_out_dir(out)
            with _Progress(not json_out and rank == 0) as prog:
                if strategies is not None:
                    comp = compare_runs(strategies, cfg, out, resume=resume, progress=prog)
                    if rank != 0:
                        return
                    if json_out:
                        print_json(comp.to_dict())  # what comparison.json holds
                        return
                    con = console()
                    con.print(comp.markdown())
                    con.print(f"wrote {out}/comparison.json, comparison.md, comparison.csv, comparison.png")
                    return
                run = run_training(cfg, out, resume=resume, progress=prog)
        if rank != 0:
            return
        if json_out:
            print_json(run.result)  # the TrainResult's fields (as metrics.json)
            return
        r = run.result
        con = console()
        skipped = run.data.get("skipped", 0)
        con.print(
            f"{r.strategy}: {r.epochs_done} epochs, train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, "
            f"val accuracy {r.val_accuracy:.3f}, {r.images_per_s:.1f} images/s"
        )
        if r.at_chance:
            con.print(
                f"note: val accuracy {r.val_accuracy:.3f} is at chance (always answering the most common class scores "
                f"{r.chance_accuracy:.3f}): this run has not learned yet; train longer or check the data."
            )
        if skipped:
            con.print(f"skipped {skipped} unreadable file(s); see {out}/data.json")
        con.print(f"wrote {out}/model.safetensors (+ model.json labels), metrics.json, curves.png, confusion.png")

    @app.command("augment")
    def augment_cmd(
        image: Path = typer.Argument(..., help="an image file"),
        n: int = typer.Option(16, "--n", min=1, max=256, help="number of augmented variants"),
        options: str | None = typer.Option(
            None,
            "--options",
            help="augmentation options, as `train --augment` takes them (default: what `train --data DATA` uses): "
            "rotation, width_shift, height_shift, shear, zoom, horizontal_flip, vertical_flip, brightness, "
            "contrast, saturation, crop, cutout, fill_mode (constant|nearest|reflect|wrap), cval",
        ),
        data: str = typer.Option("lfw", "--data", help="dataset whose training default to preview (digits: no flip)"),
        image_size: int | None = typer.Option(
            None,
            "--image-size",
            min=8,
            help="square-resize first, exactly as `train --image-size` does (default: keep the aspect, see --size)",
        ),
        seed: int = typer.Option(0, "--seed"),
        size: int = typer.Option(160, "--size", min=8, help="longest side of each tile in pixels"),
        out: str = typer.Option(
            ..., "--out", help="image file to write (.png, .jpg, .pdf, .svg...); DIR/ writes DIR/augment.png"
        ),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Preview augmentation: the original and N per-image random variants in a grid -- the same pipeline,
        defaults and per-image draws (seed, epoch 0, image i) that `convlens train` uses."""
        import dataclasses

        from convlens.data.preview import augment_preview
        from convlens.io import load_image
        from convlens.plot import image_grid

        out = out_file(out, default_name="augment.png")  # before any work
        prev = augment_preview(load_image(image), options, data, n=n, image_size=image_size, size=size, seed=seed)
        titles = ["original"] + [_describe(p) for p in prev.params]
        shown = options if options is not None else f"train default for --data {data}"
        prepare_out_file(out)
        image_grid(prev.tiles, titles=titles, ncols=min(len(prev.tiles), 6), suptitle=f"augment: {shown}").savefig(out)
        prev = dataclasses.replace(prev, out=str(out))
        if json_out:
            print_json(prev.to_dict())
            return
        console().print(f"wrote {out} ({n} variants of {image}; options: {shown})")


def _describe(p: Any) -> str:
    """A short tile title: what this draw did (angle, zoom, flips, crop, jitter, cutout)."""
    parts = [f"{round(p.angle) + 0:+d}°", f"z{p.scale:.2f}"]  # + 0: never "-0"
    parts += ["flip"] if p.flip else []
    parts += ["vflip"] if p.vflip else []
    parts += ["crop"] if p.crop is not None else []
    jit = [f"{k[0]}{v:.2f}" for k, v in (("b", p.brightness), ("c", p.contrast), ("s", p.saturation)) if v != 1.0]
    parts += [" ".join(jit)] if jit else []
    parts += ["cutout"] if p.cutout is not None else []
    return " ".join(parts)
