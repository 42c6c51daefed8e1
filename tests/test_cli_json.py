"""The JSON a command prints is its core result's serialization (issue 12, item 3), and moving each
pipeline out of the CLI kept every field and value (the "behaviour unchanged" check).

The goldens in tests/golden/cli_json/ were written by the CLI as it was BEFORE the pipelines moved
(``python tests/test_cli_json.py WRITE`` run with PYTHONPATH pointing at that older src), on a tiny
model whose weights are set from a seeded numpy generator, and a seeded random image. Paths are stored
relative to the run's folder; floats are compared to 1e-6 relative (thread counts may change the last bits).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from convlens.serialize import to_jsonable

GOLDEN = Path(__file__).parent / "golden" / "cli_json"

NET = """
import torch.nn as nn

def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
"""


def make_inputs(d: Path) -> tuple[list[str], str]:
    """The tiny model (weights from numpy's seeded generator, saved as w.pt) and a 40x50 random image."""
    import torch
    from PIL import Image

    from convlens.models import load_model

    d.mkdir(parents=True, exist_ok=True)
    (d / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "img.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(f"{d}/net.py:tiny").model
    sd = {
        k: torch.from_numpy(rng.normal(0, 0.5, tuple(v.shape)).astype(np.float32))
        for k, v in model.state_dict().items()
    }
    torch.save(sd, d / "w.pt")
    return ["--model", f"{d}/net.py:tiny", "--weights", str(d / "w.pt")], str(d / "img.png")


def commands(d: Path) -> dict[str, list[str]]:
    model, img = make_inputs(d / "in")
    return {
        "activations": ["activations", img, *model, "--out", str(d / "act"), "--layers", "0,2,6", "--topk", "2"],
        "activations_stages": ["activations", img, *model, "--out", str(d / "act2"), "--max-channels", "2"],
        "depth_profile": ["depth-profile", img, *model, "--out", str(d / "depth")],
        "filters": [
            "filters",
            *model,
            "--layer",
            "2",
            "--channels",
            "0-1",
            "--steps",
            "2",
            "--size",
            "16",
            "--out",
            str(d / "f.png"),
        ],
        "filters_kernels": ["filters", *model, "--kernels", "--layer", "auto", "--out", str(d / "k.png")],
        "summary": ["summary", *model],
    }


def run_json(argv: list[str], d: Path) -> object:
    """Run the CLI with --json at one torch thread (the goldens' setting: the default thread count follows the
    machine's load, and another count changes float32 sums in their last bits); the run's folder in paths
    becomes '$RUN'."""
    from convlens.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--threads", "1", *argv, "--json"]) == 0
    return json.loads(buf.getvalue().replace(str(d), "$RUN"))


UNSTABLE = {"seconds"}  # wall-clock time


def assert_same(new: object, old: object, where: str = "") -> None:
    """Every old key at every level (fields may be added, never removed), equal values (floats to 1e-6
    relative), wall-clock fields skipped."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(old) <= set(new), f"{where}: keys {sorted(set(old) - set(new))} lost"
        for k in old:
            if k not in UNSTABLE:
                assert_same(new[k], old[k], f"{where}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(old, float):
        assert new == pytest.approx(old, rel=1e-6, abs=1e-9), where
    else:
        assert new == old, f"{where}: {new!r} != {old!r}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_json")
    return {name: run_json(argv, d) for name, argv in commands(d).items()}, d


@pytest.mark.parametrize(
    "name", ["activations", "activations_stages", "depth_profile", "filters", "filters_kernels", "summary"]
)
def test_json_unchanged_since_the_pipeline_moved_to_the_core(outputs, name):
    assert_same(outputs[0][name], json.loads((GOLDEN / f"{name}.json").read_text()), name)


def test_activations_json_is_the_core_reports_serialization(outputs):
    from convlens.inspect import activation_report
    from convlens.io import load_image
    from convlens.models import load_model

    data, d = outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    rep = activation_report(b, load_image(d / "in" / "img.png"), ["0", "2", "6"], topk=2, image_name="$RUN/in/img.png")
    core = rep.to_dict()
    cli = data["activations"]
    assert [r.pop("figure") for r in cli["layers"]] == ["$RUN/act/act_0.png", "$RUN/act/act_2.png", None]
    assert [r.pop("figure") for r in core["layers"]] == [None, None, None]  # the front end adds the figures it drew
    assert_same(cli, core)
    # an independent check of one number: layer 2's output mean, by hand from the model's own forward
    import torch

    x = b.preprocess([load_image(d / "in" / "img.png")])
    with torch.no_grad():
        a2 = b.model[:3](x)[0]
    assert rep.layers[1].mean == pytest.approx(float(a2.mean()), rel=1e-6)
    assert rep.layers[1].shown_channels == torch.argsort(a2.mean((1, 2)), descending=True).tolist()


def test_depth_profile_json_is_the_core_profiles_serialization(outputs):
    from convlens.inspect import depth_profile_image
    from convlens.io import load_image
    from convlens.models import load_model

    data, d = outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    core = depth_profile_image(b, load_image(d / "in" / "img.png"), image_name="$RUN/in/img.png").to_dict()
    cli = dict(data["depth_profile"])
    assert cli.pop("figures") == {
        "profile": "$RUN/depth/depth_profile.png",
        "first_conv_kernels": "$RUN/depth/first_conv_kernels.png",
    }
    assert_same(cli, core)
    assert core["pretrained"] is True and core["image"] == "$RUN/in/img.png"


if __name__ == "__main__" and sys.argv[1:] == ["WRITE"]:  # regenerate the goldens (with the old code!)
    import tempfile

    GOLDEN.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp())
    for name, argv in commands(run).items():
        (GOLDEN / f"{name}.json").write_text(json.dumps(run_json(argv, run), indent=2) + "\n")
        print("wrote", name)


def test_filters_json_is_the_core_reports_serialization(outputs):
    from convlens.featvis import filters_report, kernel_report
    from convlens.models import load_model

    data, d = outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    rep = filters_report(b, "2", [0, 1], steps=2, size=16, seed=0)
    core, cli = rep.to_dict(), dict(data["filters"])
    assert core.pop("out") is None and cli.pop("out") == "$RUN/f.png"  # the file the front end wrote
    assert_same(cli, core)
    # the reported final value is the objective on the returned image: channel 0's mean at layer 2 (an oracle
    # independent of featvis: the model's own forward on the normalized image)
    import torch

    mean = torch.tensor(b.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(b.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        a = b.model[:3]((rep.result.raw.cpu() - mean) / std)
    assert rep.channels[0].value == pytest.approx(float(a[0, 0].mean()), rel=1e-4, abs=1e-6)
    k = kernel_report(b, "auto")
    kcore, kcli = k.to_dict(), dict(data["filters_kernels"])
    assert kcore.pop("out") is None and kcli.pop("out") == "$RUN/k.png"
    assert kcli == kcore and kcore["layer"] == "0" and kcore["kernel_shape"] == [3, 3, 3]
    assert k.tiles.shape == (4, 3, 3, 3)


def test_summary_json_is_the_core_summarys_serialization(outputs):
    from convlens.inspect import summarize_model
    from convlens.models import load_model

    data, d = outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    s = summarize_model(b)
    assert data["summary"] == json.loads(json.dumps(to_jsonable(s.to_dict(3))))
    # an independent count: the model's own parameters, torch's numel
    assert s.total_params == sum(p.numel() for p in b.model.parameters()) and s.pretrained is True


def test_models_json_is_the_core_catalogs_serialization(tmp_path):
    import torchvision

    from convlens.models import model_catalog

    cli = run_json(["models", "resnet1"], tmp_path)
    assert cli == model_catalog("resnet1").to_dict()
    # oracle: torchvision's own list of classifiers, every name containing 'resnet1', loadable by its bare name
    tv = {n for n in torchvision.models.list_models(module=torchvision.models) if "resnet1" in n}  # classifiers
    assert tv and {(r["name"], r["load_as"]) for r in cli["sources"] if r["source"] == "torchvision"} == {
        (n, n) for n in tv
    }
    assert cli["models"] == list(dict.fromkeys(r["name"] for r in cli["sources"]))


def test_augment_json_is_the_core_previews_serialization(outputs):
    from convlens.data.preview import augment_preview
    from convlens.io import load_image

    _, d = outputs
    img = d / "in" / "img.png"
    argv = ["augment", str(img), "--n", "6", "--options", "horizontal_flip=true", "--out", str(d / "aug.png")]
    cli = run_json(argv, d)
    prev = augment_preview(load_image(img), "horizontal_flip=true", n=6)
    core = prev.to_dict()
    assert core.pop("out") is None and cli.pop("out") == "$RUN/aug.png"
    assert cli == core
    # oracle: with flips only, a variant is the original mirrored (numpy) exactly when its draw says flip
    flips = [p.flip for p in prev.params]
    assert True in flips and False in flips
    for tile, flip in zip(prev.tiles[1:], flips, strict=True):
        assert np.array_equal(tile, np.fliplr(prev.tiles[0]) if flip else prev.tiles[0])


@pytest.mark.parametrize("kind", ["gaussian", "laplacian"])
def test_pyramid_json_is_the_core_pyramids_serialization(outputs, kind):
    from convlens.io import load_image
    from convlens.match import image_to_chw
    from convlens.pyramid import image_pyramid

    _, d = outputs
    img = d / "in" / "img.png"
    cli = run_json(["pyramid", str(img), "--kind", kind, "--levels", "3", "--out", str(d / kind)], d)
    files = cli.pop("files")
    assert files[-1] == f"$RUN/{kind}/{kind}_pyramid.png" and len(files) == 4
    assert cli == image_pyramid(image_to_chw(load_image(img)), kind, 3).to_dict()
    # oracle: each level halves the size rounding up (OpenCV pyrDown: (n + 1) // 2), from the 40x50 image
    assert [lv["shape"] for lv in cli["levels"]] == [[40, 50], [20, 25], [10, 13]]
    assert (cli["reconstruction_max_abs_error"] is None) == (kind == "gaussian")


def test_conv_and_pool_json_are_the_core_runs_serialization(tmp_path):
    import torch
    import torch.nn.functional as F

    from convlens.arith.run import conv_run, pool_run

    rng = np.random.default_rng(3)
    x, k = rng.normal(size=(2, 6, 5)), rng.normal(size=(3, 2, 3, 3))
    np.save(tmp_path / "x.npy", x), np.save(tmp_path / "k.npy", k)
    argv = ["conv", "--input", str(tmp_path / "x.npy"), "--kernel", str(tmp_path / "k.npy")]
    cli = run_json([*argv, "--stride", "2", "--padding", "1", "--trace", "1,1", "--filter", "2"], tmp_path)
    run = conv_run(x, k, stride=(2, 2), padding=1, trace_at=(1, 1), filter=2)
    assert cli == json.loads(json.dumps(run.to_dict()))
    want = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(k), stride=2, padding=1)[0]  # oracle: torch
    np.testing.assert_allclose(np.array(cli["output"]), want.numpy(), rtol=1e-12)
    assert cli["trace"]["total"] == pytest.approx(float(want[2, 1, 1]), rel=1e-12)
    pcli = run_json(
        ["pool", "--input", str(tmp_path / "x.npy"), "--kernel", "3", "--stride", "2", "--ceil-mode"], tmp_path
    )
    assert pcli == json.loads(json.dumps(pool_run(x, "max", (3, 3), stride=(2, 2), ceil_mode=True).to_dict()))
    pwant = F.max_pool2d(torch.from_numpy(x)[None], 3, 2, ceil_mode=True)[0]
    np.testing.assert_array_equal(np.array(pcli["output"]), pwant.numpy())
    assert "trace" not in pcli and pcli["output_shape"] == list(pwant.shape)


def test_top_patches_json_is_the_core_results_serialization(outputs):
    import torch

    from convlens.inspect import top_patches
    from convlens.io import load_image
    from convlens.models import load_model

    _, d = outputs
    m = ["--model", f"{d}/in/net.py:tiny", "--weights", str(d / "in" / "w.pt")]
    cli = run_json(["top-patches", str(d / "in" / "img.png"), *m, "--layer", "2", "--channels", "0-1", "--k", "2"], d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    res = top_patches(b, [str(d / "in" / "img.png")], "2", [0, 1], k=2)
    assert cli == json.loads(json.dumps(to_jsonable(res.to_json())).replace(str(d), "$RUN"))
    assert [r["pretrained"] for r in cli] == [True, True]
    with torch.no_grad():  # oracle: the best patch's value is the channel's largest activation (model's own forward)
        a = b.model[:3](b.preprocess([load_image(d / "in" / "img.png")]))[0]
    assert cli[0]["patches"][0]["value"] == pytest.approx(float(a[0].max()), rel=1e-6)


def test_graph_json_is_the_core_graphs_serialization(outputs):
    from convlens.inspect.netgraph import network_graph
    from convlens.models import load_model

    _, d = outputs
    m = ["--model", f"{d}/in/net.py:tiny", "--weights", str(d / "in" / "w.pt")]
    cli = run_json(["graph", *m], d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    g = network_graph(b, b.meta.input_size)
    assert cli == json.loads(json.dumps(to_jsonable(g.to_dict())))
    assert cli["pretrained"] is True and network_graph(b.model, b.meta.input_size).pretrained is None
    # oracle: the parameters the nodes carry add up to torch's count of the model's parameters
    assert sum(n["params"] for n in cli["nodes"]) == sum(p.numel() for p in b.model.parameters())


def test_unit_json_is_the_core_traces_serialization(outputs):
    import torch

    from convlens.inspect import trace_unit
    from convlens.io import load_image
    from convlens.models import load_model

    _, d = outputs
    m = ["--model", f"{d}/in/net.py:tiny", "--weights", str(d / "in" / "w.pt")]
    cli = run_json(["unit", str(d / "in" / "img.png"), *m, "--layer", "2", "--at", "1,3,4"], d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = load_model(f"{d}/in/net.py:tiny", weights=d / "in" / "w.pt")
    x = b.preprocess([load_image(d / "in" / "img.png")])
    t = trace_unit(b, x, "2", (1, 3, 4), field=True)
    assert cli == json.loads(json.dumps(to_jsonable(t.to_dict())))
    assert cli["pretrained"] is True and "pretrained" not in trace_unit(b.model, x, "2", (1, 3, 4)).to_dict()
    with torch.no_grad():  # oracle: the unit's value from the model's own forward
        assert cli["value"] == pytest.approx(float(b.model[:3](x)[0, 1, 3, 4]), rel=1e-6)
