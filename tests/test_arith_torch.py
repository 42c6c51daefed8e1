"""Property tests: convlens.arith against torch.nn.functional in float64 (the oracle).

Every example is tiny (a few channels, maps <= 9x9) so several hundred examples per op run fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convlens.arith import conv2d, output_shape, pool2d, trace
from convlens.errors import InputError

TOL = 1e-9


def _arr(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _torch_conv(x, w, b, stride, padding, dilation, groups, mode):
    """The oracle: F.conv2d for zeros; nn.Conv2d (its own padding logic) for the other modes and
    F.pad + F.conv2d for 4-tuple pads (F.pad takes (left, right, top, bottom))."""
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    bt = None if b is None else torch.from_numpy(b)
    if isinstance(padding, tuple) and len(padding) == 4:
        t, btm, l, r = padding
        pmode = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}[mode]
        xt = F.pad(xt, (l, r, t, btm), mode=pmode)
        return F.conv2d(xt, wt, bt, stride=stride, padding=0, dilation=dilation, groups=groups)
    if mode == "zeros":
        return F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    m = torch.nn.Conv2d(
        x.shape[1],
        w.shape[0],
        w.shape[2:],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=b is not None,
        padding_mode=mode,
        dtype=torch.float64,
    )
    with torch.no_grad():
        m.weight.copy_(wt)
        if b is not None:
            m.bias.copy_(bt)
        return m(xt)


pad_st = st.one_of(
    st.sampled_from(["valid", "same"]),
    st.integers(0, 3),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=400)
@given(
    n=st.integers(1, 2),
    cg=st.integers(1, 2),
    fg=st.integers(1, 2),
    groups=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=pad_st,
    mode=st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv2d_matches_torch(n, cg, fg, groups, h, w, k, s, d, padding, mode, bias, seed):
    c, f = cg * groups, fg * groups
    if padding == "same":
        s = (1, 1)
    x = _arr(seed, (n, c, h, w))
    wt = _arr(seed + 1, (f, cg, *k))
    b = _arr(seed + 2, (f,)) if bias else None
    try:
        want = _torch_conv(x, wt, b, s, padding, d, groups, mode)
    except RuntimeError:  # torch refuses (kernel too large, reflect pad >= size, ...): so must we
        event("torch refuses")
        with pytest.raises(InputError):
            conv2d(x, wt, b, stride=s, padding=padding, dilation=d, groups=groups, padding_mode=mode)
        return
    got = conv2d(x, wt, b, stride=s, padding=padding, dilation=d, groups=groups, padding_mode=mode)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOL)
    shape = output_shape((h, w), k, stride=s, padding=padding, dilation=d, in_channels=c, out_channels=f)
    assert shape.output == (want.shape[2], want.shape[3], f)
    # the trace of one element tells the same story as the map
    i, j, ff = seed % got.shape[2], (seed // 7) % got.shape[3], seed % f
    t = trace(
        x,
        wt,
        i,
        j,
        filter=ff,
        batch=n - 1,
        bias=b,
        stride=s,
        padding=padding,
        dilation=d,
        groups=groups,
        padding_mode=mode,
    )
    assert abs(t.total - got[n - 1, ff, i, j]) < TOL
    assert len(t.channels) == cg


@st.composite
def pool_geometry(draw):
    """(k, p): pads mostly within PyTorch's pad <= k//2, sometimes one past it (must be refused)."""
    k = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    over = draw(st.integers(0, 9)) == 0
    p = tuple(draw(st.integers(0, kk // 2 + over)) for kk in k)
    return k, p


@pytest.mark.slow
@settings(max_examples=400)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kp=pool_geometry(),
    s=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    d=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    ceil_mode=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool2d_matches_torch(n, c, h, w, kp, s, d, ceil_mode, seed):
    k, p = kp
    x = _arr(seed, (n, c, h, w))
    try:
        want = F.max_pool2d(torch.from_numpy(x), k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
    except RuntimeError:
        event("torch refuses")
        with pytest.raises(InputError):
            pool2d(x, "max", k, s, p, d, ceil_mode)
        return
    got = pool2d(x, "max", k, s, p, d, ceil_mode)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOL)
    r = output_shape((h, w), k, op="maxpool", stride=s, padding=p, dilation=d, ceil_mode=ceil_mode, in_channels=c)
    assert r.output == (want.shape[2], want.shape[3], c)


@st.composite
def pool_geometry(draw):
    """(k, p): pads mostly within PyTorch's pad <= k//2, sometimes one past it (must be refused)."""
    k = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    over = draw(st.integers(0, 9)) == 0
    p = tuple(draw(st.integers(0, kk // 2 + over)) for kk in k)
    return k, p


@pytest.mark.slow
@settings(max_examples=300)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    kp=pool_geometry(),
    s=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    ceil_mode=st.booleans(),
    include=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_avg_pool2d_matches_torch(n, c, h, w, kp, s, ceil_mode, include, seed):
    k, p = kp
    x = _arr(seed, (n, c, h, w))
    try:
        want = F.avg_pool2d(torch.from_numpy(x), k, stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=include)
    except RuntimeError:
        event("torch refuses")
        with pytest.raises(InputError):
            pool2d(x, "avg", k, s, p, 1, ceil_mode, include)
        return
    got = pool2d(x, "avg", k, s, p, ceil_mode=ceil_mode, count_include_pad=include)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=TOL)
    r = output_shape((h, w), k, op="avgpool", stride=s, padding=p, ceil_mode=ceil_mode, in_channels=c)
    assert r.output == (want.shape[2], want.shape[3], c)


@settings(max_examples=200)
@given(
    size=st.integers(1, 40),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    d=st.integers(1, 3),
    same=st.booleans(),
)
def test_tf_convention_closed_formulas(size, k, s, d, same):
    """TF: SAME -> ceil(i/s), pad total max((o-1)s + k_eff - i, 0) with the extra one after;
    VALID -> ceil((i - k_eff + 1)/s)."""
    k_eff = d * (k - 1) + 1
    if not same and size < k_eff:
        with pytest.raises(InputError):
            output_shape(size, k, stride=s, dilation=d, padding="valid", convention="tf")
        return
    r = output_shape(size, k, stride=s, dilation=d, padding="same" if same else "valid", convention="tf")
    if same:
        o = -(-size // s)
        total = max((o - 1) * s + k_eff - size, 0)
        assert r.output[:2] == (o, o)
        assert r.padding == (total // 2, total - total // 2, total // 2, total - total // 2)
    else:
        o = -(-(size - k_eff + 1) // s)
        assert r.output[:2] == (o, o) and r.padding == (0, 0, 0, 0)
    # applying the TF pads explicitly under the torch floor rule gives the same size
    t = output_shape(size, k, stride=s, dilation=d, padding=r.padding)
    assert t.output[:2] == r.output[:2]


@settings(max_examples=150)
@given(
    h=st.integers(1, 12),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    d=st.integers(1, 3),
    pads=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    pool=st.booleans(),
    ceil_mode=st.booleans(),
)
def test_uncovered_rows_match_autograd(h, k, s, d, pads, pool, ceil_mode):
    """Rows that receive no gradient through the op are exactly the rows no tap ever reads."""
    if pool:  # avg pooling (symmetric pad <= k//2, no dilation); every tap passes gradient
        d, p = 1, min(pads[0], k // 2)
        pads = (p, p)
    x = torch.ones(1, 1, h, 1, dtype=torch.float64, requires_grad=True)
    try:
        if pool:
            y = F.avg_pool2d(x, (k, 1), stride=(s, 1), padding=(pads[0], 0), ceil_mode=ceil_mode)
        else:
            xp = F.pad(x, (0, 0, pads[0], pads[1]))
            y = F.conv2d(xp, torch.ones(1, 1, k, 1, dtype=torch.float64), stride=(s, 1), dilation=(d, 1))
    except RuntimeError:
        return
    y.sum().backward()
    never = int((x.grad[0, 0, :, 0] == 0).sum())
    r = output_shape(
        (h, 1),
        (k, 1),
        op="avgpool" if pool else "conv",
        stride=(s, 1),
        dilation=(d, 1),
        padding=(pads[0], pads[1], 0, 0) if not pool else (pads[0], 0),
        ceil_mode=ceil_mode and pool,
    )
    assert r.output[0] == y.shape[2]
    assert r.axes[0].uncovered == never
    read = np.nonzero(x.grad[0, 0, :, 0].numpy())[0]
    assert r.axes[0].uncovered_tail == (h - 1 - read.max() if read.size else h)


@settings(max_examples=150)
@given(
    c=st.integers(1, 3),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    kp=pool_geometry(),
    s=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    ceil_mode=st.booleans(),
    include=st.booleans(),
    kind=st.sampled_from(["max", "avg"]),
    seed=st.integers(0, 2**16),
    pick=st.tuples(st.floats(0, 0.999), st.floats(0, 0.999), st.floats(0, 0.999)),
)
def test_pool_trace_window_and_winner_match_torch(c, h, w, kp, s, d, ceil_mode, include, kind, seed, pick):
    """The traced value is torch's output; the max's argmax is torch's return_indices; avg = sum / divisor."""
    from convlens.arith import pool_trace

    k, p = kp
    d = d if kind == "max" else (1, 1)
    x = np.round(_arr(seed, (1, c, h, w)) * 4) / 4  # quarter steps: ties happen, as in real maps
    xt = torch.from_numpy(x)
    try:
        if kind == "max":
            want, idx = F.max_pool2d(xt, k, s, p, d, ceil_mode=ceil_mode, return_indices=True)
        else:
            want = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil_mode, count_include_pad=include)
    except RuntimeError:
        return
    ch, i, j = (int(f * n) for f, n in zip(pick, (c, want.shape[2], want.shape[3]), strict=True))
    t = pool_trace(x[0], kind, k, i, j, channel=ch, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode,
                   count_include_pad=include)  # fmt: skip
    assert t.value == pytest.approx(float(want[0, ch, i, j]), abs=1e-12)
    if kind == "max" and t.padded.all():  # a dilated window reading padding only: -inf, nothing wins
        assert t.argmax is None and t.value == float("-inf")
    elif kind == "max":
        a, b = t.argmax
        flat = int(idx[0, ch, i, j])  # torch: flat index into the (H, W) input of the winning cell
        assert (t.input_rows[a], t.input_cols[b]) == divmod(flat, w) and not t.padded[a, b]
        assert t.window[a][b] == t.value
    else:
        assert t.sum / t.divisor == pytest.approx(t.value, abs=1e-12)
        real = [v for row in t.window for v in row if v is not None]
        assert t.sum == pytest.approx(sum(real), abs=1e-12)


def test_cli_pool_trace_json_and_text(capsys):
    import json

    from convlens.cli import main

    x = "[[1,-2,3],[4,5,-6],[7,8,9]]"
    assert (
        main(["pool", "--input", x, "--kernel", "2", "--stride", "1", "--padding", "1", "--trace", "0,0", "--json"])
        == 0
    )
    tr = json.loads(capsys.readouterr().out)["trace"]
    assert tr["window"] == [[None, None], [None, 1.0]] and tr["value"] == 1.0 and tr["argmax"] == [1, 1]
    assert main(["pool", "--input", x, "--kind", "avg", "--kernel", "2", "--trace", "0,0"]) == 0
    out = capsys.readouterr().out
    assert "mean = 8 / 4 = 2" in out and "-0" not in out
    assert main(["pool", "--input", x, "--kernel", "2", "--trace", "5,5"]) == 2


def test_traces_never_print_minus_zero(capsys):
    from convlens.cli import main

    # -0.0 * 1 products and a -0 sum: printed as 0
    assert (
        main(["conv", "--input", "[[-0.0, 0.0], [0.0, -0.0]]", "--kernel", "[[1, -1], [-1, 1]]", "--trace", "0,0"]) == 0
    )
    out = capsys.readouterr().out
    assert "-0 " not in out and "-0\n" not in out and " -0" not in out.replace(" -0.", " x")


@settings(max_examples=200)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    p=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    op=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    cin=st.integers(1, 4),
    groups=st.integers(1, 2),
)
def test_convtranspose_shape_and_params_match_torch(h, w, k, s, p, op, d, cin, groups):
    from convlens.arith import transposed_shape

    cin, cout = cin * groups, 3 * groups
    try:
        layer = torch.nn.ConvTranspose2d(cin, cout, k, s, p, op, groups=groups, dilation=d)
        want = layer(torch.zeros(1, cin, h, w)).shape
        ok = min(want[2:]) >= 1
    except (RuntimeError, ValueError):
        ok = False
    if not ok:
        with pytest.raises(InputError):
            transposed_shape((h, w), k, stride=s, padding=p, output_padding=op, dilation=d,
                             in_channels=cin, out_channels=cout, groups=groups)  # fmt: skip
        return
    r = transposed_shape((h, w), k, stride=s, padding=p, output_padding=op, dilation=d,
                         in_channels=cin, out_channels=cout, groups=groups)  # fmt: skip
    assert r.output == (want[2], want[3], cout)
    assert r.params == sum(t.numel() for t in layer.parameters())


@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    sc=st.tuples(st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 1.3]), st.sampled_from([0.5, 1.0, 2.0, 1.7])),
)
def test_upsample_shape_matches_torch(h, w, sc):
    from convlens.arith import upsample_shape

    try:
        want = torch.nn.Upsample(scale_factor=sc, mode="nearest")(torch.zeros(1, 2, h, w)).shape
    except RuntimeError:  # torch refuses an empty output
        want = (1, 2, 0, 0)
    if min(want[2:]) < 1:
        with pytest.raises(InputError):
            upsample_shape((h, w), sc)
        return
    assert upsample_shape((h, w), sc, in_channels=2).output == (want[2], want[3], 2)


def test_keras_conv2d_transpose_lengths_by_hand():
    from convlens.arith import transposed_shape

    # keras deconv_output_length: same -> in*s; valid -> in*s + max(k - s, 0); with output_padding:
    # (in-1)*s + k - 2*pad + op, pad = k//2 (same)
    assert transposed_shape(5, 3, stride=2, padding="same", convention="tf").output[:2] == (10, 10)
    assert transposed_shape(5, 3, stride=2, padding="valid", convention="tf").output[:2] == (11, 11)
    # (5 - 1)*2 + 4 - 2*(4//2) + 1 = 9
    assert transposed_shape(5, 4, stride=2, padding="same", output_padding=1, convention="tf").output[:2] == (9, 9)
    with pytest.raises(InputError, match="numeric padding"):
        transposed_shape(5, 3, padding="same")


def test_cli_shape_convtranspose_and_upsample(capsys):
    import json

    from convlens.cli import main

    argv = ["shape", "--input", "4x4x64", "--op", "convtranspose", "--kernel", "3", "--stride", "2"]
    assert main([*argv, "--padding", "1", "--output-padding", "1", "--filters", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    want = torch.nn.ConvTranspose2d(64, 32, 3, 2, 1, 1)(torch.zeros(1, 64, 4, 4)).shape
    assert d["output"] == [want[2], want[3], 32] and d["params"] == 64 * 32 * 9 + 32
    assert main(["shape", "--input", "7x7x3", "--op", "upsample", "--scale", "2x1.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == [14, 10, 3]
    assert (
        main(["shape", "--input", "7x7x3", "--op", "conv", "--kernel", "3", "--filters", "2", "--output-padding", "1"])
        == 2
    )
    assert "--output-padding belongs to --op convtranspose" in capsys.readouterr().err
