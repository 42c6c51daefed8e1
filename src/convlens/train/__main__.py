"""``python -m convlens.train`` -- the same training as ``convlens train``, launchable with torchrun.

``torchrun --nproc_per_node=2 -m convlens.train --data lfw --strategy features --out RUN`` starts one
process per rank; each joins the process group (gloo on CPU, nccl on CUDA, each rank on
``cuda:LOCAL_RANK``), trains with DistributedDataParallel on its ``DistributedSampler`` share, and
rank 0 alone writes checkpoints, metrics and figures. Without torchrun it runs in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    from convlens.train.loop import STRATEGIES, TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m convlens.train", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=d.data)
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES)
    p.add_argument("--model", default=d.model)
    p.add_argument("--weights", default=None)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--head-epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch, split across processes")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--unfreeze", type=int, default=d.unfreeze)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--augment", default=None, help="options like rotation=30,zoom=0.2 or 'none'")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    from convlens.errors import ConvlensError
    from convlens.train.loop import TrainConfig
    from convlens.train.run import run_training

    a = _parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = a.device
    dist_started = False
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        dist_started = True
    try:
        cfg = TrainConfig(
            data=a.data,
            strategy=a.strategy,
            model=a.model,
            weights=a.weights,
            epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            unfreeze=a.unfreeze,
            seed=a.seed,
            device=device,
            image_size=a.image_size,
            augment=a.augment,
            head_epochs=a.head_epochs,
        )
        run = run_training(cfg, a.out, resume=a.resume)
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:
            from dataclasses import asdict

            r = asdict(run.result)
            print(
                json.dumps(r, indent=2)
                if a.json
                else f"{r['strategy']}: {r['epochs_done']} epochs, val accuracy {r['val_accuracy']:.3f}, "
                f"val loss {r['val_loss']:.4f}, {r['images_per_s']:.1f} images/s -> {a.out}"
            )
        return 0
    except ConvlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist_started:
            import torch.distributed as dist

            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
