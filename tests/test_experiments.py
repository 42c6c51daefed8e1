"""Experiments in quick mode: the measured directions hold (not exact numbers), results are
deterministic for a seed, the CLI writes PNG + JSON with the contract keys."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convlens.cli import main
from convlens.errors import InputError
from convlens.experiments import depth_vs_resolution, pooling, run_experiment, vanishing_gradient
from convlens.experiments.data import load_digits_split, seeded
from convlens.experiments.vanishing_gradient import build_net, conv_grad_norms


@pytest.fixture(scope="module")
def vg():
    return vanishing_gradient(quick=True, seed=0)


@pytest.mark.slow
def test_vanishing_gradient_directions(vg):
    assert vg.depths == [8, 20, 56]
    assert set(vg.variants) == {"plain", "residual", "plain_bn", "residual_bn"}
    for v in vg.variants.values():
        for key in ("first_layer_grad_norm", "last_layer_grad_norm", "val_accuracy"):
            assert len(getattr(v, key)) == 3
        assert [len(n) for n in v.layer_grad_norms] == [7, 19, 55]  # depth - 1 convs
        assert all(0.0 <= a <= 1.0 for a in v.val_accuracy)
    plain, res = vg.variants["plain"], vg.variants["residual"]
    # without normalization the plain net's first-layer gradient vanishes with depth...
    assert plain.first_layer_grad_norm[2] < plain.first_layer_grad_norm[0] / 100
    # ...while identity shortcuts keep it: the residual net's is orders of magnitude larger at every depth
    for i in range(3):
        assert res.first_layer_grad_norm[i] > 100 * plain.first_layer_grad_norm[i]
    assert res.first_layer_grad_norm[2] >= res.first_layer_grad_norm[0] / 10
    # with BatchNorm the deep plain net's early gradients explode relative to its last layer; residual stays balanced
    pbn, rbn = vg.variants["plain_bn"], vg.variants["residual_bn"]
    ratio = lambda v, i: v.first_layer_grad_norm[i] / v.last_layer_grad_norm[i]  # noqa: E731
    assert ratio(pbn, 2) > 10 * ratio(rbn, 2)
    assert ratio(pbn, 2) > ratio(pbn, 0)
    assert "default init" in vg.init and "same width" in vg.init


def test_conv_grad_norms_match_backward_and_leave_no_grad():
    with seeded(3):
        net = build_net(8, residual=True, norm=True)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    norms = conv_grad_norms(net, x, y)
    assert all(p.grad is None for p in net.parameters())
    torch.nn.functional.cross_entropy(net(x), y).backward()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert norms == pytest.approx([float(m.weight.grad.norm()) for m in convs], rel=1e-5)


def test_build_net_depth_and_init_are_seeded():
    for depth in (8, 20):
        net = build_net(depth, residual=False, norm=False)
        weight_layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(weight_layers) == depth
    with seeded(1):
        a = build_net(8, residual=True, norm=False)
    with seeded(1):
        b = build_net(8, residual=True, norm=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(InputError, match="depth"):
        build_net(7, residual=True, norm=False)


def test_pooling_directions_and_table():
    r = pooling(quick=True, seed=0)
    ch = r.feature_change
    assert all(v[0] == 0.0 for v in ch.values())
    for s in range(1, len(r.shifts)):
        assert ch["max pool 2x2/s2"][s] < ch["no pooling"][s]
        assert ch["max pool 4x4/s4"][s] < ch["max pool 2x2/s2"][s]
    mean = lambda k: sum(ch[k][1:]) / (len(r.shifts) - 1)  # noqa: E731
    assert mean("max pool 2x2/s2") < mean("subsample stride 2")  # the max, not only the subsampling, helps
    row = r.reduction[0]
    assert row.pooling.startswith("max pool 2x2 stride 2")
    assert row.values_out * 4 == row.values_in and row.removed_fraction == 0.75
    big = [t for t in r.reduction if t.input == (224, 224, 64) and t.pooling.startswith("max pool 2x2")][0]
    assert big.output == (112, 112, 64)
    with pytest.raises(InputError, match="max_shift"):
        pooling(quick=True, max_shift=20)


def test_depth_vs_resolution_structure():
    r = depth_vs_resolution(quick=True, seed=0, train_steps=3)
    d, f, w = r.nets["doubling"], r.nets["fixed"], r.nets["fixed_wide"]
    assert d.channels == [8, 16, 32] and f.channels == [8, 8, 8]
    assert d.resolution == [16, 8, 4]
    # doubling: activations halve per stage; fixed: they fall 4x per stage
    assert [a / b for a, b in zip(d.activations_per_stage, d.activations_per_stage[1:])] == [2, 2]
    assert [a / b for a, b in zip(f.activations_per_stage, f.activations_per_stage[1:])] == [4, 4]
    assert f.params < d.params < w.params and f.macs < d.macs < w.macs
    assert len(d.train_loss) == 3 and 0.0 <= d.val_accuracy <= 1.0


@pytest.mark.slow
def test_depth_vs_resolution_doubling_beats_fixed_after_training():
    r = depth_vs_resolution(quick=True, seed=0, train_steps=100)
    assert r.nets["doubling"].val_accuracy > r.nets["fixed"].val_accuracy
    assert r.nets["doubling"].val_accuracy > 0.5


def test_deterministic_with_seed():
    a = pooling(quick=True, seed=5, max_shift=2)
    b = pooling(quick=True, seed=5, max_shift=2)
    assert a.feature_change == b.feature_change
    c = depth_vs_resolution(quick=True, seed=2, train_steps=2)
    e = depth_vs_resolution(quick=True, seed=2, train_steps=2)
    assert c.nets["doubling"].train_loss == e.nets["doubling"].train_loss


def test_digits_split_and_errors():
    d = load_digits_split(16, seed=0)
    assert d.x_train.shape[1:] == (1, 16, 16) and float(d.x_train.max()) <= 1.0
    assert set(d.y_val.tolist()) <= set(range(10))
    with pytest.raises(InputError, match="size"):
        load_digits_split(4)
    with pytest.raises(InputError, match="unknown experiment"):
        run_experiment("dropout")


def test_cli_experiment_writes_png_and_json(tmp_path, capsys):
    assert main(["experiment", "pooling", "--quick", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shifts"][0] == 0 and "feature_change" in out
    assert (tmp_path / "pooling.png").stat().st_size > 1000
    assert json.loads((tmp_path / "pooling.json").read_text())["reduction"][0]["removed_fraction"] == 0.75
    assert main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    assert "NAME must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_vanishing_gradient_json_contract(tmp_path, capsys, vg, monkeypatch):
    # reuse the module's quick result: the contract is about the rendering, not a second run
    import convlens.experiments as ex

    monkeypatch.setitem(ex.EXPERIMENTS, "vanishing-gradient", lambda **kw: vg)
    assert main(["experiment", "vanishing-gradient", "--quick", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["depths"] == [8, 20, 56]
    for name in ("plain", "residual", "plain_bn", "residual_bn"):
        v = out["variants"][name]
        for key in ("first_layer_grad_norm", "last_layer_grad_norm", "val_accuracy"):
            assert len(v[key]) == 3 and all(x is None or math.isfinite(x) for x in v[key])
    assert (tmp_path / "vanishing_gradient_grad_norms.png").exists()
    assert (tmp_path / "vanishing_gradient_training.png").exists()


def test_thread_count_restored():
    before = torch.get_num_threads()
    pooling(quick=True, max_shift=1, num_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(InputError, match="num_threads"):
        pooling(quick=True, num_threads=0)
    assert torch.get_num_threads() == before


# -- a run either shows its lesson or says why it cannot ------------------------------------------


def test_too_short_runs_say_so_instead_of_teaching_the_wrong_lesson():
    from convlens.experiments.depth_resolution import depth_vs_resolution
    from convlens.experiments.vanishing_gradient import vanishing_gradient

    r = depth_vs_resolution(train_steps=1)
    assert not r.lesson_shown or max(n.val_accuracy for n in r.nets.values()) < 0.2
    assert r.caveat and ("chance" in r.caveat or "too short" in r.caveat) and r.findings[-1].startswith("CAVEAT")
    v = vanishing_gradient(depths=(4, 8), quick=True, train_steps=1)
    assert "chance" in v.caveat and v.findings[-1].startswith("CAVEAT")


@pytest.mark.slow
def test_quick_depth_vs_resolution_shows_the_lesson():
    """30 quick steps reversed the lesson (doubling 0.21 < fixed 0.41); the quick run must now show it."""
    from convlens.experiments.depth_resolution import depth_vs_resolution

    r = depth_vs_resolution(quick=True)
    d, f, w = r.nets["doubling"], r.nets["fixed"], r.nets["fixed_wide"]
    assert r.lesson_shown and r.caveat is None
    assert d.val_accuracy > f.val_accuracy + 0.1 and w.macs > 5 * d.macs
