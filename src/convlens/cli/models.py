"""CLI commands for models and inspection: ``models``, ``predict`` (and, from the inspect module,
``summary``, ``activations``, ``depth-profile``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from convlens.cli.common import console, print_json

MODEL_OPT = typer.Option("efficientnet_lite0", "--model", help="registered name, torchvision/timm name, or file.py:factory")
WEIGHTS_OPT = typer.Option(None, "--weights", help="local .safetensors/.pt/.pth weights (loaded safely)")
DEVICE_OPT = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ...")


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``predict``."""

    @app.command("models")
    def models_cmd(
        pattern: str = typer.Argument("*", help="glob over model names"),
        source: Optional[str] = typer.Option(None, "--source", help="convlens | torchvision | timm"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """List the models convlens can load (nothing is downloaded: only embedded weights are pretrained)."""
        from convlens.models import list_models

        names = list_models(pattern, source=source)
        if json_out:
            print_json({"models": names})
            return
        con = console()
        con.print(f"{len(names)} models match '{pattern}'. Pretrained offline: efficientnet_lite0 (embedded).")
        for n in names:
            con.print(n)

    @app.command("predict")
    def predict_cmd(
        images: list[Path] = typer.Argument(..., help="image files or folders"),
        model: str = MODEL_OPT,
        weights: Optional[Path] = WEIGHTS_OPT,
        topk: int = typer.Option(5, "--topk", min=1),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Classify images: top-k classes with probabilities."""
        from convlens.inspect.predict import predict_files

        results = predict_files(images, model=model, weights=weights, topk=topk, device=device)
        if json_out:
            print_json(results)
            return
        con = console()
        for r in results:
            con.print(f"[bold]{r.image}[/bold]")
            for t in r.top:
                con.print(f"  {t.prob:7.2%}  {t.label}  (class {t.cls})")
