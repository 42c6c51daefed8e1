"""convlens.train: head surgery, freezing done right, determinism, checkpoints and resume, run folders, CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_helpers import TINY_MODEL, make_folder

from convlens.data import load_dataset
from convlens.errors import DataError, InputError, ModelError
from convlens.train import (
    TrainConfig,
    base_stages,
    find_head,
    fit,
    frozen_modules,
    plan_stages,
    replace_head,
    set_trainable,
    top_stage_groups,
)
from convlens.train import checkpoint as ckpt
from convlens.train.loop import _Loop


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box OpenMP spinning costs 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("tiny"), n_per_class=20, size=24)


@pytest.fixture(scope="module")
def tiny_data(folder):
    return load_dataset(folder, image_size=32, seed=0)


def cfg(folder, **kw) -> TrainConfig:
    base = dict(data=str(folder), model=TINY_MODEL, epochs=2, image_size=32, batch_size=8, seed=0, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


# -- surgery ------------------------------------------------------------------------------------


def test_find_and_replace_head_for_any_backbone():
    import timm
    import torchvision

    m = timm.create_model(TINY_MODEL, num_classes=7)
    name, head = replace_head(m, 3, seed=1)
    assert name == "classifier" and head.out_features == 3 and m.num_classes == 3
    assert m.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    r = torchvision.models.resnet18()
    assert replace_head(r, 4)[0] == "fc" and r.fc.out_features == 4
    vgg_like = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10)),
    )
    assert find_head(vgg_like)[0] == "3.2"
    replace_head(vgg_like, 2)
    assert vgg_like(torch.zeros(1, 3, 8, 8)).shape == (1, 2)
    with pytest.raises(ModelError, match="no classifier head"):
        find_head(nn.Sequential(nn.Conv2d(3, 3, 1)))
    # seeded: same seed -> same head weights, other seed -> other weights
    a, b, c = (replace_head(timm.create_model(TINY_MODEL), 2, seed=s)[1].weight for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stages_and_discriminative_groups():
    import timm

    m = timm.create_model(TINY_MODEL, num_classes=2)
    stages = base_stages(m, "classifier", 32)
    flat = [n for g in stages for n in g]
    assert flat == [n for n, _ in m.named_parameters() if not n.startswith("classifier")]
    assert stages[-1][-1].startswith("bn2")  # conv_head/bn2 join the top stage
    groups = top_stage_groups(stages, 2, decay=0.5)
    assert [g.lr_factor for g in groups] == [0.25, 0.5] and list(groups[-1].names) == stages[-1]
    assert top_stage_groups(stages, 0) == [] and len(top_stage_groups(stages, 99)) == len(stages)


def test_top_stage_groups_default_decay_halves_the_lr_per_stage():
    """No ``decay`` given: the documented layer decay 0.5 (docs/train.md: head ``lr * 0.1``, the topmost unfrozen
    stage ``lr * 0.1 * 0.5``, the next ``lr * 0.1 * 0.25``): topmost ['d'] 0.5**1 = 0.5, next ['b', 'c'] 0.5**2."""
    groups = top_stage_groups([["a"], ["b", "c"], ["d"]], 2)
    assert [(g.names, g.lr_factor) for g in groups] == [(("b", "c"), 0.25), (("d",), 0.5)]


def test_frozen_modules_keep_bn_in_eval():
    base = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.BatchNorm2d(4, affine=False))
    net = nn.Sequential(base, nn.Dropout(), nn.Sequential(nn.Linear(4, 2), nn.Dropout()))
    set_trainable(net, ["2.0.weight", "2.0.bias"])
    fm = frozen_modules(net)
    # the frozen block with everything in it (also parameter-free Dropout/BN); the head and its Dropout train
    assert set(fm) == {"0", "0.0", "0.1", "0.2", "0.3"}
    with pytest.raises(ModelError, match="unknown parameter"):
        set_trainable(net, ["nope"])


def test_plan_and_config_validation(folder):
    assert [s.trains for s in plan_stages(cfg(folder, strategy="finetune", epochs=3))] == ["head", "top"]
    assert plan_stages(cfg(folder, strategy="features"))[0].features
    for bad, msg in [
        (dict(strategy="magic"), "strategy"),
        (dict(epochs=0), "epochs"),
        (dict(lr=-1.0), "lr"),
        (dict(strategy="finetune", epochs=1), "finetune needs"),
        (dict(augment="zoom=7"), "zoom"),
        (dict(unfreeze=-1), "unfreeze"),
    ]:
        with pytest.raises(InputError, match=msg):
            cfg(folder, **bad).validated()


# the strategy table of docs/train.md ("Strategies") and of the convlens.train.loop docstring, one Stage per row as
# (name, epochs, trains, augment, features): scratch trains everything on plain images, scratch+aug on augmented ones,
# features only the head on cached base outputs (no augmentation), frozen+aug only the head on augmented images,
# finetune trains the head for --head-epochs (default "half of --epochs, rounded up"), then the top stages with it,
# both on augmented images. The CLI prints these names ("stage 'head'", "epoch 3/3 [finetune]").
@pytest.mark.parametrize(
    ("epochs", "head"),
    [(5, 3), (6, 3), (7, 4)],  # ceil(5 / 2) = 3 (3 + 2), ceil(6 / 2) = 3 (3 + 3), ceil(7 / 2) = 4 (4 + 3)
)
def test_plan_stages_is_the_documented_strategy_table(folder, epochs, head):
    import dataclasses

    e = epochs
    table = {
        "scratch": [("train", e, "all", False, False)],
        "scratch+aug": [("train", e, "all", True, False)],
        "features": [("head", e, "head", False, True)],
        "frozen+aug": [("head", e, "head", True, False)],
        "finetune": [("head", head, "head", True, False), ("finetune", e - head, "top", True, False)],
    }
    for strategy, want in table.items():
        got = [dataclasses.astuple(s) for s in plan_stages(cfg(folder, strategy=strategy, epochs=e))]
        assert got == want, strategy
    # an explicit --head-epochs wins over the default split: 1 + 4 and 4 + 1 of 5 epochs
    for he in (1, 4):
        got = [dataclasses.astuple(s) for s in plan_stages(cfg(folder, strategy="finetune", epochs=5, head_epochs=he))]
        assert got == [("head", he, "head", True, False), ("finetune", 5 - he, "top", True, False)]


@pytest.mark.parametrize(
    ("strategy", "epochs", "want"),
    [  # per stage: (name, trains, augmented training images), the table of docs/train.md "Strategies"
        ("scratch", 1, [("train", "all", False)]),
        ("scratch+aug", 1, [("train", "all", True)]),
        ("features", 1, [("head", "head", False)]),  # the one base pass runs on plain images
        ("frozen+aug", 1, [("head", "head", True)]),
        ("finetune", 2, [("head", "head", True), ("finetune", "top", True)]),
    ],
)
def test_each_strategy_trains_what_the_table_says(folder, tiny_data, monkeypatch, strategy, epochs, want):
    """The plan seen through a real run: stage names in the history, what trains (parameter counts from a fresh
    timm model), whether the training images go through the augmentation, and ``features`` reading the training
    images once (2 chunks of 2 * batch_size = 16 for the cache) instead of 4 batches of 8 per epoch."""
    import timm

    from convlens.data import ImageDataset

    events: list[dict] = []
    reads: list[tuple[str, int, bool]] = []  # per read of the training images: (stage, batch size, augmented)
    plain_batch = ImageDataset.batch

    def batch(self, indices):
        if self.images is tiny_data.train.images:
            stage = [ev["stage"] for ev in events if ev["event"] == "stage"][-1]
            aug = self.augment is not None and not self.augment.is_identity
            reads.append((stage, len(indices), aug))
        return plain_batch(self, indices)

    monkeypatch.setattr(ImageDataset, "batch", batch)
    run = fit(cfg(folder, strategy=strategy, epochs=epochs, unfreeze=1), data=tiny_data, progress=events.append)

    ref = timm.create_model(TINY_MODEL, num_classes=2)
    n_all = sum(p.numel() for p in ref.parameters())
    n_head = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("classifier."))
    top = set(base_stages(ref, "classifier", 32)[-1])
    n_top = n_head + sum(p.numel() for n, p in ref.named_parameters() if n in top)
    trainable = {"all": n_all, "head": n_head, "top": n_top}
    stages = [ev for ev in events if ev["event"] == "stage"]
    assert [(ev["stage"], ev["trains"], ev["trainable_params"]) for ev in stages] == [
        (name, trains, trainable[trains]) for name, trains, _ in want
    ]
    assert [h["stage"] for h in run.history] == [name for name, _, _ in want]  # one epoch per stage here
    assert all(ev["epochs"] == 1 for ev in stages)
    if strategy == "features":
        assert reads == [("head", 16, False), ("head", 16, False)]
        assert [ev["shape"][0] for ev in events if ev["event"] == "features"] == [32]
    else:  # 32 training images, batch 8: 4 reads per epoch, augmented exactly when the stage says so
        assert reads == [(name, 8, aug) for name, _, aug in want for _ in range(4)]
        assert not [ev for ev in events if ev["event"] == "features"]


# -- freezing done right --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["features", "frozen+aug", "finetune"])
def test_frozen_weights_and_bn_buffers_bitwise_unchanged(folder, tiny_data, strategy):
    import timm

    from convlens.models import load_model

    c = cfg(folder, strategy=strategy, epochs=2, unfreeze=1)
    with torch.random.fork_rng():  # fit's own init, reproduced: the same seed inside fork_rng
        torch.manual_seed(c.seed)
        ref = load_model(TINY_MODEL).model
    replace_head(ref, 2, seed=c.seed)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    run = fit(c, data=tiny_data)
    after = run.model.state_dict()
    assert set(before) == set(after)
    head = [k for k in after if k.startswith("classifier")]
    assert any(not torch.equal(before[k], after[k]) for k in head)  # the head learned
    if strategy == "finetune":
        top = set(base_stages(timm.create_model(TINY_MODEL, num_classes=2), "classifier", 32)[-1])
        frozen = [k for k in after if not k.startswith("classifier") and k not in top]
        assert any(not torch.equal(before[k], after[k]) for k in top if k.endswith("weight"))  # top stage moved
    else:
        frozen = [k for k in after if not k.startswith("classifier")]
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert not changed, f"frozen tensors changed: {changed[:5]}"
    bn_buffers = [k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert bn_buffers and all(torch.equal(before[k], after[k]) for k in bn_buffers)


def test_frozen_parameters_are_not_given_to_the_optimizer(folder, tiny_data):
    c = cfg(folder, strategy="finetune", epochs=2, unfreeze=1).validated()
    with torch.random.fork_rng():
        loop = _Loop(c, tiny_data, None, None)
        for stage in loop.stages:
            _, opt, frozen = loop._configure(stage)
            in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
            for name, p in loop.model.named_parameters():
                assert (id(p) in in_opt) == p.requires_grad, name
            n_trainable = sum(p.requires_grad for p in loop.model.parameters())
            assert 0 < n_trainable < len(list(loop.model.parameters()))
            if stage.trains == "top":  # discriminative LRs: head fastest, then decaying with depth
                lrs = [g["lr"] for g in opt.param_groups]
                assert lrs == sorted(lrs) and math.isclose(lrs[-1], c.lr * c.finetune_lr)
            from convlens.train import apply_train_mode

            apply_train_mode(loop.model, frozen)
            bns = {n: m for n, m in loop.model.named_modules() if isinstance(m, nn.BatchNorm2d)}
            for n, m in bns.items():
                trains = any(p.requires_grad for p in m.parameters())
                # frozen BN always in eval; in the finetune stage unfrozen BN too (bn_train=False)
                assert m.training == (trains and stage.trains != "top"), n
            assert loop.model.training and loop.model.get_submodule(loop.head_name).training


def test_batchnorm_statistics_update_exactly_where_bn_layers_train(folder, tiny_data):
    """Running statistics are kept only for frozen BatchNorm and, with ``bn_train=False``, in the finetune stage
    (docs/train.md). In a scratch run every BatchNorm trains: 32 training images in batches of 8 are 4 train-mode
    forwards per epoch, so each ``num_batches_tracked`` goes 0 -> 4 (the eval passes of validation do not count).
    With ``bn_train=True`` the BatchNorm layers of the unfrozen top stage count the 4 batches of the finetune epoch
    and every other BatchNorm (frozen base; all of them in the head epoch) stays at 0."""
    scratch = fit(cfg(folder, strategy="scratch", epochs=1), data=tiny_data).model.state_dict()
    counts = {k: int(v) for k, v in scratch.items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {4}, counts
    assert all(not torch.equal(v, torch.zeros_like(v)) for k, v in scratch.items() if k.endswith("running_mean"))

    import timm

    # the modules owning the parameters of the top stage (e.g. 'bn2' for 'bn2.weight')
    ref = timm.create_model(TINY_MODEL, num_classes=2)
    top = {n.rsplit(".", 1)[0] for n in base_stages(ref, "classifier", 32)[-1]}
    run = fit(cfg(folder, strategy="finetune", epochs=2, unfreeze=1, bn_train=True), data=tiny_data)
    sd = run.model.state_dict()
    counts = {k.rsplit(".", 1)[0]: int(v) for k, v in sd.items() if k.endswith("num_batches_tracked")}
    in_top = set(counts) & top
    assert in_top and in_top != set(counts)
    assert counts == {m: 4 if m in in_top else 0 for m in counts}


def test_weight_decay_cannot_move_frozen_parameters(folder, tiny_data):
    """AdamW with a huge weight decay: frozen params would shrink if they were in the optimizer."""
    run = fit(cfg(folder, strategy="frozen+aug", epochs=1, weight_decay=10.0), data=tiny_data)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        from convlens.models import load_model

        ref = load_model(TINY_MODEL).model.state_dict()
    assert torch.equal(ref["conv_stem.weight"], run.model.state_dict()["conv_stem.weight"])


def test_one_process_group_wraps_in_ddp_and_trains_as_without(folder, tiny_data, tmp_path):
    """Under an initialized process group (here gloo, one process, as torchrun would start it) the trained module is
    wrapped in DistributedDataParallel (the head alone for ``features``, docs/train.md), on CPU without device_ids;
    with one process its gradient average is the gradient itself, so the run equals the run without a group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    c = cfg(folder, strategy="features", epochs=1).validated()
    plain = fit(c, data=tiny_data)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with torch.random.fork_rng():
            loop = _Loop(c, tiny_data, None, None)
            net, _, _ = loop._configure(loop.stages[0])
        assert isinstance(net, DDP) and net.module is loop.model.get_submodule("classifier")
        assert net.device_ids is None
        wrapped = fit(c, data=tiny_data)
    finally:
        dist.destroy_process_group()
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert getattr(wrapped.result, key) == pytest.approx(getattr(plain.result, key), rel=1e-6), key


# -- determinism, checkpoints, resume -------------------------------------------------------------


def test_same_seed_same_metrics_other_seed_differs(folder, tiny_data):
    a = fit(cfg(folder, strategy="scratch+aug", epochs=2), data=tiny_data)
    b = fit(cfg(folder, strategy="scratch+aug", epochs=2), data=tiny_data)
    c = fit(cfg(folder, strategy="scratch+aug", epochs=2, seed=1), data=tiny_data)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)
    # the caller's global RNG is untouched by training
    torch.manual_seed(123)
    x = torch.rand(1)
    torch.manual_seed(123)
    fit(cfg(folder, strategy="features", epochs=1), data=tiny_data)
    assert torch.equal(torch.rand(1), x)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_after", [1, 2])  # 2 = exactly at the head -> finetune boundary
def test_resume_after_crash_equals_uninterrupted_run(folder, tiny_data, tmp_path, crash_after):
    c = cfg(folder, strategy="finetune", epochs=4, unfreeze=1)
    full = fit(c, data=tiny_data, run_dir=tmp_path / "full")

    def crash(ev):
        if ev["event"] == "step" and ev["epoch"] == crash_after + 1:
            raise _Crash  # dies inside the epoch after the checkpoint of epoch `crash_after`

    with pytest.raises(_Crash):
        fit(c, data=tiny_data, run_dir=tmp_path / "cut", progress=crash)
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["epoch"] == crash_after and state["stage_name"] == "head"
    resumed = fit(c, data=tiny_data, run_dir=tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert getattr(resumed.result, key) == pytest.approx(getattr(full.result, key), rel=1e-5, abs=1e-6)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-6), k


def test_checkpoint_files_and_errors(folder, tiny_data, tmp_path):
    c = cfg(folder, strategy="frozen+aug", epochs=2)
    fit(c, data=tiny_data, run_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.glob("checkpoint*"))
    assert files == ["checkpoint-0002.safetensors", "checkpoint.json"]  # older tensor file removed
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert {"epoch", "stage", "optimizer", "scheduler", "rng", "history", "config"} <= set(state)
    assert not list(tmp_path.glob("*.tmp"))
    # a run may grow (issue 17: --resume --epochs N extends it), never change its past
    with pytest.raises(DataError, match="was made with lr=0.003"):
        fit(cfg(folder, strategy="frozen+aug", epochs=2, lr=1e-2), data=tiny_data, run_dir=tmp_path, resume=True)
    with pytest.raises(DataError, match="cannot shorten"):
        fit(cfg(folder, strategy="frozen+aug", epochs=1), data=tiny_data, run_dir=tmp_path, resume=True)
    with pytest.raises(DataError, match="has none"):
        fit(c, data=tiny_data, run_dir=tmp_path / "nothing", resume=True)
    # images added or changed under the same --data path: resuming would mix two datasets in one run
    other = load_dataset(make_folder(tmp_path / "grown", n_per_class=21, size=24), image_size=32, seed=0)
    with pytest.raises(DataError, match="changed since the checkpoint"):
        fit(c, data=other, run_dir=tmp_path, resume=True)
    grown = tmp_path / "grown-run"
    shutil.copytree(tmp_path, grown, ignore=shutil.ignore_patterns("grown*", "nothing"))
    longer = fit(cfg(folder, strategy="frozen+aug", epochs=3), data=tiny_data, run_dir=grown, resume=True)
    assert [h["epoch"] for h in longer.history] == [1, 2, 3]
    (tmp_path / "checkpoint-0002.safetensors").write_bytes(b"broken")
    with pytest.raises(DataError, match="damaged"):
        fit(c, data=tiny_data, run_dir=tmp_path, resume=True)


def test_optimizer_state_roundtrip():
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    t, rest = ckpt.split_optimizer_state(opt.state_dict())
    json.dumps(rest)
    opt2 = torch.optim.AdamW([nn.Parameter(torch.ones(3))], lr=0.1)
    opt2.load_state_dict(ckpt.merge_optimizer_state(t, rest))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# -- run folder, reload, CLI ----------------------------------------------------------------------


def test_run_folder_and_reload_with_labels(folder, tmp_path):
    from convlens.models import load_model
    from convlens.train.run import run_training

    run = run_training(cfg(folder, strategy="features", epochs=2), tmp_path)
    for f in (
        "model.safetensors",
        "model.json",
        "metrics.json",
        "history.json",
        "curves.png",
        "confusion.png",
        "data.json",
    ):
        assert (tmp_path / f).is_file(), f
    assert list((tmp_path / "features").glob("features-*.safetensors"))
    b = load_model(TINY_MODEL, weights=tmp_path / "model.safetensors")
    assert b.labels == ["left", "right"] and b.meta.num_classes == 2
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(b.model(x), run.model(x), atol=1e-6)


def test_cli_train_json_and_compare(folder, tmp_path, capsys):
    from convlens.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(folder),
        "--model",
        TINY_MODEL,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--image-size",
        "32",
    ]
    assert main(args + ["--strategy", "features", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {
        "strategy",
        "epochs_done",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "images_per_s",
        "pretrained",
        "chance_accuracy",
        "at_chance",
    }
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["chance_accuracy"] == pytest.approx(0.5)  # two balanced classes: 4 of 8 val images each
    assert main(args + ["--compare", "features,frozen+aug", "--out", str(tmp_path / "cmp"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "cmp" / "comparison.json").read_text())  # one serialization
    assert printed["data"] == str(folder) and printed["model"] == TINY_MODEL
    rows = printed["rows"]
    assert [r["strategy"] for r in rows] == ["features", "frozen+aug"]
    for f in ("comparison.json", "comparison.md", "comparison.csv", "comparison.png", "frozen_aug/metrics.json"):
        assert (tmp_path / "cmp" / f).is_file(), f
    # human output with progress events on stderr (several epochs, stage changes)
    assert main(args + ["--strategy", "finetune", "--epochs", "3", "--out", str(tmp_path / "human")]) == 0
    cap = capsys.readouterr()
    assert "finetune: 3 epochs" in cap.out and "val accuracy" in cap.out
    assert "epoch 3/3 [finetune]" in cap.err and "stage 'finetune'" in cap.err
    assert "2 classes, 32 train / 8 val images at 32 px" in cap.err
    assert main(args + ["--strategy", "nope", "--out", str(out)]) == 2
    assert "strategy must be one of" in capsys.readouterr().err
    assert main(args + ["--compare", "scratch,scratch", "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "fresh")]) == 2
    assert "neither a built-in" in capsys.readouterr().err


def test_cli_augment_grid(tmp_path, chelsea, capsys):
    from PIL import Image

    from convlens.cli import main

    src = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(src)
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "augment",
                str(src),
                "--n",
                "5",
                "--options",
                "rotation=30,zoom=0.2",
                "--seed",
                "1",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert out.is_file() and len(res["params"]) == 5 and len({p["angle"] for p in res["params"]}) == 5
    assert main(["augment", str(src), "--options", "spin=3", "--out", str(out)]) == 2


def test_finetune_torchvision_backbone_last_linear_head(folder, tiny_data):
    """A backbone without timm seams: head = last nn.Linear ('fc'), stages probed from shapes."""
    c = cfg(folder, model="resnet18", strategy="finetune", epochs=2, unfreeze=1)
    with torch.random.fork_rng():
        torch.manual_seed(c.seed)
        from convlens.models import load_model

        before = {k: v.clone() for k, v in load_model("resnet18").model.state_dict().items()}
    run = fit(c, data=tiny_data)
    assert run.head_name == "fc" and run.model.fc.out_features == 2
    after = run.model.state_dict()
    moved = {k.split(".")[0] for k in after if not k.startswith("fc") and not torch.equal(before[k], after[k])}
    assert moved == {"layer4"}  # only the top stage was unfrozen; its BN running stats kept (bn_train=False)
    assert all(torch.equal(before[k], after[k]) for k in after if "running" in k)


def test_grayscale_user_model_trains(tmp_path):
    """A user model whose first conv takes one channel trains on the (RGB) built-in data via luma input."""
    from convlens.train import TrainConfig, fit

    f = tmp_path / "graynet.py"
    f.write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))\n"
    )
    run = fit(TrainConfig(data="digits", strategy="scratch", model=f"{f}:build", epochs=1, image_size=8))
    assert run.history and 0.0 <= run.history[-1]["val_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # no global pool: the Linear is sized for 16 px inputs, training runs at 32 px
        (
            "torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 10)",
            "cannot run on 32x32",
        ),
        # the forward returns two unnamed score tensors: which one is the logits? (a (logits, aux) tuple or
        # {'logits': ...} trains: convlens.models.logits reads them, test_tuple_output_model_trains)
        (
            "_Two(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)))",
            "got dict",
        ),
    ],
)
def test_model_that_cannot_train_at_this_size_or_returns_no_logits_fails_in_one_sentence(
    folder, tiny_data, tmp_path, body, match
):
    from convlens.errors import ModelError

    f = tmp_path / "net.py"
    f.write_text(
        "import torch\n"
        "class _Pair(torch.nn.Module):\n"
        "    def __init__(self, net):\n"
        "        super().__init__(); self.net = net\n"
        "    def forward(self, x):\n"
        "        return self.net(x), x.mean()\n"
        "class _Two(_Pair):\n"
        "    def forward(self, x):\n"
        "        return {'a': self.net(x), 'b': self.net(x)}\n"
        f"def build():\n    return torch.nn.Sequential({body})\n"
        "def pair():\n"
        "    return _Pair(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), "
        "torch.nn.Flatten(), torch.nn.Linear(4, 10)))\n"
    )
    with pytest.raises(ModelError, match=match):
        fit(cfg(folder, model=f"{f}:build", strategy="scratch", epochs=1), data=tiny_data)
    if "_Two" in body:  # the same backbone returning (logits, features) trains: one logits() rule
        res = fit(cfg(folder, model=f"{f}:pair", strategy="scratch", epochs=1), data=tiny_data)
        assert len(res.history) == 1


def test_cli_train_data_error_prints_one_line(tmp_path, capsys):
    # the progress display starts at the first event: an error before it is exactly one 'error:' line
    from convlens.cli import main

    make_folder(tmp_path / "d", n_per_class=3, size=8, classes=("only",))
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, repr(err)


def test_cli_augment_unknown_output_format_is_an_error(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from convlens.cli import main

    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(tmp_path / "a.png")
    assert main(["augment", str(tmp_path / "a.png"), "--n", "1", "--out", str(tmp_path / "grid.xyz")]) == 2
    assert "image format" in capsys.readouterr().err and not (tmp_path / "grid.xyz").exists()


def test_unusable_device_is_an_input_error_before_any_work(folder):
    from convlens.errors import InputError

    with pytest.raises(InputError, match="device must look like"):
        fit(cfg(folder, strategy="scratch", device="gpu"))
    bad = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 on a CPU-only machine)
    with pytest.raises(InputError, match="requested but this machine has"):
        fit(cfg(folder, strategy="scratch", device=bad))


def test_learning_curves_tick_whole_epochs():
    from convlens.plot.train import comparison_plot, learning_curves

    hist = [
        {"epoch": 1, "stage": "train", "train_loss": 0.7, "val_loss": 0.69, "train_accuracy": 0.7, "val_accuracy": 0.5}
    ]
    for fig in (learning_curves(hist), comparison_plot({"scratch": hist})):
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


# -- it learns: the loss falls, one step is the optimizer's formula, LRs are logged as used -------


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory):
    """Red vs. blue noise images: learnable from globally pooled features too (left vs. right is not: pooling
    erases where the bright half is), so every strategy, including a frozen random base + head, can learn it."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("color")
    rng = np.random.default_rng(0)
    for ci, c in enumerate(("red", "blue")):
        (root / c).mkdir()
        for i in range(20):
            img = rng.integers(0, 80, (24, 24, 3)).astype(np.uint8)
            img[..., 0 if ci == 0 else 2] += 150
            Image.fromarray(img).save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def color_data(color_folder):
    return load_dataset(color_folder, image_size=32, seed=0)


@pytest.mark.parametrize("strategy", ["scratch", "scratch+aug", "features", "frozen+aug", "finetune"])
def test_training_loss_falls_for_every_strategy(color_folder, color_data, strategy):
    """A loop that climbs the loss (a sign slip, a wrong target, a zeroed step) fails here; two runs of the same
    loop agreeing with each other (the determinism and DDP tests) cannot catch that."""
    run = fit(cfg(color_folder, strategy=strategy, epochs=4, lr=3e-2, unfreeze=1), data=color_data)
    losses = [h["train_loss"] for h in run.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses  # measured: >= 12 % lower for every strategy (features 0.68 -> 0.60)
    assert sum(losses[2:]) < sum(losses[:2]), losses
    assert run.result.val_accuracy >= 0.75 or strategy == "scratch"  # scratch's BN running stats lag (0.5 measured)


def test_finetune_step_is_one_hand_computed_adamw_step(color_folder, color_data, tmp_path):
    """The whole training set in one batch, no augmentation: the first step of the finetune stage must move every
    unfrozen parameter by AdamW's first step, computed here by hand from an independent gradient:
    ``p1 = p0 (1 - lr wd) - lr g / (|g| + eps)`` (Adam's bias corrections make m^ = g, v^ = g^2 at step 1),
    with lr = lr * finetune_lr * layer_decay**k for the k-th stage from the top and lr * finetune_lr for the
    head; frozen parameters stay bitwise equal."""
    from convlens.models import load_model
    from convlens.train.loop import TrainConfig

    c = TrainConfig(
        data=str(color_folder),
        model=TINY_MODEL,
        strategy="finetune",
        epochs=2,
        head_epochs=1,
        batch_size=len(color_data.train),
        image_size=32,
        seed=0,
        lr=1e-2,
        finetune_lr=0.1,
        layer_decay=0.5,
        unfreeze=2,
        weight_decay=1.0,  # far from AdamW's default 0.01: a weight_decay that never reaches AdamW shows
        augment="none",
    )
    start: dict[str, torch.Tensor] = {}

    def grab(ev):  # the checkpoint of epoch 1 (end of the head stage) is on disk when stage 2 is configured
        if ev["event"] == "stage" and ev["stage"] == "finetune":
            start.update(ckpt.load_checkpoint(tmp_path)[0])

    run = fit(c, data=color_data, run_dir=tmp_path, progress=grab)
    assert start and run.history[-1]["images"] == len(color_data.train)  # one step in the finetune stage
    after = run.model.state_dict()

    model = load_model(TINY_MODEL).model
    replace_head(model, 2, seed=0)
    model.load_state_dict(start)
    model.eval()  # the finetune stage keeps every BatchNorm in eval (bn_train=False); this model has no dropout
    x, y = color_data.train.with_augment(None).batch(list(range(len(color_data.train))))
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    assert tuple(load_model(TINY_MODEL).preprocess.mean) == pytest.approx(
        (0.485, 0.456, 0.406)
    )  # the normalization above
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    g = dict(zip(names, grads))
    stages = base_stages(model, "classifier", 32)
    lr_of = {n: 1e-2 * 0.1 for n in names if n.startswith("classifier.")}
    for k, stage in enumerate(reversed(stages[-2:]), start=1):
        lr_of.update({n: 1e-2 * 0.1 * 0.5**k for n in stage})
    eps, wd = 1e-8, 1.0
    moved = 0
    for n in names:
        p0, p1 = start[n].float(), after[n].float()
        if n not in lr_of:
            assert torch.equal(p0, p1), f"frozen {n} moved"
            continue
        lr = lr_of[n]
        want = p0 * (1 - lr * wd) - lr * g[n] / (g[n].abs() + eps)
        assert torch.allclose(p1, want, rtol=1e-4, atol=1e-6), (n, (p1 - want).abs().max())
        moved += 1
    assert moved > 4  # head weight+bias and the two top stages


def test_history_logs_each_groups_lr_as_used(color_folder, color_data):
    """Cosine per stage, stepped per batch: the LR at step s of a stage of T steps is eta (1 + cos(pi s / T)) / 2.
    4 steps per epoch here (32 train images, batch 8); the finetune stage has 2 groups below the head."""
    run = fit(
        cfg(color_folder, strategy="finetune", epochs=4, lr=1e-2, unfreeze=2, finetune_lr=0.1, layer_decay=0.5),
        data=color_data,
    )
    cos = lambda eta, s, T: eta * (1 + math.cos(math.pi * s / T)) / 2  # noqa: E731
    want = {
        1: {"head": (1e-2, cos(1e-2, 3, 8))},
        2: {"head": (cos(1e-2, 4, 8), cos(1e-2, 7, 8))},
        3: {"top-2": (2.5e-4, cos(2.5e-4, 3, 8)), "top-1": (5e-4, cos(5e-4, 3, 8)), "head": (1e-3, cos(1e-3, 3, 8))},
        4: {"top-2": (1.25e-4, cos(2.5e-4, 7, 8)), "top-1": (2.5e-4, cos(5e-4, 7, 8)), "head": (5e-4, cos(1e-3, 7, 8))},
    }
    for h in run.history:
        got = {g["group"]: (g["lr_start"], g["lr_end"]) for g in h["lr_groups"]}
        assert list(got) == list(want[h["epoch"]]), (h["epoch"], list(got))
        for name, (a, b) in want[h["epoch"]].items():
            assert got[name] == pytest.approx((a, b), rel=1e-9), (h["epoch"], name)
        assert h["lr"] == pytest.approx(want[h["epoch"]]["head"][0])  # the old key: the head's LR, never 0.0
        assert all(g["lr_end"] <= g["lr_mean"] <= g["lr_start"] and g["params"] > 0 for g in h["lr_groups"])
    from convlens.plot.train import learning_curves

    ax = learning_curves(run.history).axes[2]
    assert [ln.get_label() for ln in ax.lines] == ["head", "top-2", "top-1"] and ax.get_yscale() == "log"


def test_lr_record_of_an_epoch_without_steps_reports_each_groups_lr():
    """No step taken (``lr_used`` empty): each group's current LR, as start, end and mean; the unnamed group
    gets ``group<i>``; ``params`` counts elements (2 x 3 = 6; 4 + 1 = 5)."""
    from convlens.train.loop import _lr_record

    opt = torch.optim.SGD(
        [
            {"params": [nn.Parameter(torch.zeros(2, 3))], "lr": 0.02, "group": "top-1"},
            {"params": [nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(1))], "lr": 0.2},
        ]
    )
    assert _lr_record(opt, []) == [
        {"group": "top-1", "params": 6, "lr_start": 0.02, "lr_end": 0.02, "lr_mean": 0.02},
        {"group": "group1", "params": 5, "lr_start": 0.2, "lr_end": 0.2, "lr_mean": 0.2},
    ]
    # three steps: start, end and the mean (0.02 + 0.01 + 0.0) / 3 = 0.01, (0.2 + 0.1 + 0.0) / 3 = 0.1
    rec = _lr_record(opt, [[0.02, 0.2], [0.01, 0.1], [0.0, 0.0]])
    assert [(r["lr_start"], r["lr_end"]) for r in rec] == [(0.02, 0.0), (0.2, 0.0)]
    assert [r["lr_mean"] for r in rec] == pytest.approx([0.01, 0.1], rel=1e-12)


# -- run folders: refuse to overwrite, extend on resume, no empty folder on failure --------------


def test_resume_with_more_epochs_extends_the_run(folder, tiny_data, tmp_path):
    import math

    c = cfg(folder, strategy="finetune", epochs=2, unfreeze=1)
    fit(c, data=tiny_data, run_dir=tmp_path)
    longer = fit(cfg(folder, strategy="finetune", epochs=4, unfreeze=1), data=tiny_data, run_dir=tmp_path, resume=True)
    h = longer.history
    assert [e["epoch"] for e in h] == [1, 2, 3, 4] and longer.result.epochs_done == 4
    # the head stage keeps its 1 epoch; the 2 extra epochs lengthen the joint stage to 3 epochs, whose cosine
    # is stretched: at the start of epoch 3 (one of three joint epochs done) lr = base * (1 + cos(pi/3)) / 2
    assert [e["stage"] for e in h] == ["head", "finetune", "finetune", "finetune"]
    base = h[1]["lr"]
    assert h[2]["lr"] == pytest.approx(base * (1 + math.cos(math.pi / 3)) / 2, rel=1e-6)
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["epoch"] == 4 and state["config"]["head_epochs"] == 1
    with pytest.raises(DataError, match="cannot shorten"):
        fit(cfg(folder, strategy="finetune", epochs=3, unfreeze=1), data=tiny_data, run_dir=tmp_path, resume=True)


def test_cli_train_refuses_an_existing_run_folder(tmp_path, capsys):
    from convlens.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert main(["train", "--data", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(["train", "--data", "digits", "--out", str(out), "--resume", "--overwrite"]) == 2


def test_failing_commands_leave_no_empty_folder(tmp_path, capsys):
    from convlens.cli import main

    make_folder(tmp_path / "d", n_per_class=3, size=8, classes=("only",))  # one class: unusable
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o" / "deep")]) == 2
    assert not (tmp_path / "o").exists()
    assert main(["tour", "--only", "q99", "--out", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    "out, msg",
    [("/proc/x.png", "cannot write"), ("x.txt", "image format"), ("blocker/x.png", "is a file")],
)
def test_bad_out_file_fails_before_any_work(out, msg, tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    from convlens.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("")
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(tmp_path / "a.png")
    for argv in (
        ["augment", "a.png", "--n", "1"],
        ["filters", "--layer", "blocks.0", "--channels", "0", "--steps", "1", "--size", "8"],
    ):
        assert main([*argv, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and msg in err and err.count("\n") == 1, err


def test_out_folder_gets_the_default_file_name_and_reports_it(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from convlens.cli import main

    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(tmp_path / "a.png")
    assert main(["augment", str(tmp_path / "a.png"), "--n", "1", "--out", f"{tmp_path}/figs/", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["out"]
    assert written == str(tmp_path / "figs" / "augment.png") and Path(written).is_file()
    assert main(["augment", str(tmp_path / "a.png"), "--n", "1", "--out", str(tmp_path / "grid"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()
