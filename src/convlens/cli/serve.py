"""CLI command ``serve``: the local web explorer (see :mod:`convlens.serve`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


def register(app: typer.Typer) -> None:
    """Add ``serve``."""

    @app.command("serve")
    def serve_cmd(
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        images: Path | None = typer.Option(None, "--images", help="a folder of your images to explore"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
        port: int = typer.Option(8765, "--port", help="TCP port (0: any free port)"),
        device: str = DEVICE_OPT,
        cache_mb: int = typer.Option(512, "--cache-mb", help="cap of the per-image activation cache, in MB"),
        upload_mb: int = typer.Option(20, "--upload-mb", help="largest accepted upload, in MB"),
    ) -> None:
        """Explore a model on your images in the browser: prediction, graph, activations, units, CAM, arithmetic."""
        import os

        # a long-running server waits between requests: idle OpenMP threads should sleep, not spin
        # (read when torch loads, which happens below unless another command loaded it already)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from convlens.errors import InputError
        from convlens.serve import Explorer, serve

        if not 0 <= port <= 65535:
            raise InputError(f"--port must be in 0..65535, got {port}.")
        if cache_mb < 0 or upload_mb < 1:
            raise InputError(f"--cache-mb must be >= 0 and --upload-mb >= 1, got {cache_mb} and {upload_mb}.")
        explorer = Explorer.for_model(
            model,
            weights=weights,
            device=device,
            images_dir=images,
            cache_bytes=cache_mb * 1024 * 1024,
            upload_bytes=upload_mb * 1024 * 1024,
        )

        def ready(url: str) -> None:
            typer.echo(f"convlens explorer: {url}  (model {explorer.bundle.meta.name}; Ctrl-C to stop)", err=False)

        with contextlib.suppress(KeyboardInterrupt):
            serve(explorer, host=host, port=port, on_ready=ready)
        typer.echo("stopped.", err=True)
