"""The course's worked examples, the cost counts and the bad-input contract of convlens.arith."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convlens.arith import conv2d, conv_cost, output_shape, pad2d, pool2d, trace
from convlens.errors import ConvlensError, InputError

rng = np.random.default_rng(0)


# ---------------------------------------------------------------- worked shapes
def test_128x128x32_sixteen_3x3_filters_stride_1_and_2():
    x = torch.zeros(1, 32, 128, 128, dtype=torch.float64)
    w = torch.zeros(16, 32, 3, 3, dtype=torch.float64)
    for s in (1, 2):
        r = output_shape((128, 128), 3, stride=s, in_channels=32, out_channels=16)
        real = F.conv2d(x, w, stride=s).shape
        assert r.output == (real[2], real[3], real[1])
    r1 = output_shape((128, 128), 3, stride=1, in_channels=32, out_channels=16)
    assert r1.output == (126, 126, 16)
    r2 = output_shape((128, 128), 3, stride=2, in_channels=32, out_channels=16)
    assert r2.output == (63, 63, 16)
    h = r2.axes[0]
    assert (h.fraction, h.exact, h.rounding) == ("127/2", 63.5, "floor")
    assert h.uncovered == 1 and h.uncovered_tail == 1  # the last row is never read
    assert "63.5" in h.substituted and "floor" in h.substituted
    assert r2.notes and "64" in r2.notes[0] and "SAME" in r2.notes[0]
    assert r2.padding == (0, 0, 0, 0)
    assert "floor" in r2.formula


def test_tf_same_gives_64_and_valid_gives_63():
    same = output_shape((128, 128), 3, stride=2, padding="same", convention="tf", out_channels=16)
    assert same.output == (64, 64, 16)
    assert same.padding == (0, 1, 0, 1)  # total max(63*2 + 3 - 128, 0) = 1, extra at bottom/right
    # applying those pads under the floor rule reproduces TF's size (and real torch agrees)
    x = torch.zeros(1, 1, 128, 128, dtype=torch.float64)
    xt = F.pad(x, (0, 1, 0, 1))
    assert F.conv2d(xt, torch.zeros(1, 1, 3, 3, dtype=torch.float64), stride=2).shape[-2:] == (64, 64)
    valid = output_shape((128, 128), 3, stride=2, padding="valid", convention="tf")
    assert valid.output[:2] == (63, 63)


@pytest.mark.parametrize(
    "size,k,s,d,want_same,want_valid",
    [(128, 3, 2, 1, 64, 63), (7, 3, 2, 1, 4, 3), (5, 2, 2, 1, 3, 2), (10, 3, 1, 2, 10, 6), (1, 5, 3, 1, 1, None)],
)
def test_tf_worked_cases(size, k, s, d, want_same, want_valid):
    assert output_shape(size, k, stride=s, dilation=d, padding="same", convention="tf").output[0] == want_same
    if want_valid is None:
        with pytest.raises(InputError):
            output_shape(size, k, stride=s, dilation=d, padding="valid", convention="tf")
    else:
        assert output_shape(size, k, stride=s, dilation=d, padding="valid", convention="tf").output[0] == want_valid


def test_zero_padding_keeps_4x4():
    x = rng.standard_normal((1, 4, 4))
    w = rng.standard_normal((1, 1, 3, 3))
    assert output_shape(4, 3, padding=1).output[:2] == (4, 4)
    y = conv2d(x, w, padding=1)
    assert y.shape == (1, 4, 4)
    t = trace(x, w, 0, 0, padding=1)
    # the top-left window reads one padded row and one padded column: 5 padded cells, all zero
    assert t.channels[0].padded.sum() == 5
    assert np.all(t.channels[0].window[t.channels[0].padded] == 0)
    assert t.input_rows == (-1, 0, 1) and t.input_cols == (-1, 0, 1)
    assert y[0, 0, 0] == pytest.approx(np.sum(x[0, :2, :2] * w[0, 0, 1:, 1:]), abs=1e-12)


def test_dilation_2_acts_as_5x5_on_6x6():
    x = rng.standard_normal((1, 6, 6))
    w = rng.standard_normal((1, 1, 3, 3))
    r = output_shape(6, 3, dilation=2)
    assert r.output[:2] == (2, 2) and r.axes[0].effective_kernel == 5
    y = conv2d(x, w, dilation=2)
    assert y.shape == (1, 2, 2)
    t = trace(x, w, 1, 1, dilation=2)
    dk = t.channels[0].dilated_kernel
    assert dk.shape == (5, 5) and np.all(dk[1::2, :] == 0) and np.all(dk[:, 1::2] == 0)
    # the dilated kernel applied without dilation gives the same map
    np.testing.assert_allclose(conv2d(x, dk[None, None]), y, atol=1e-12)
    assert t.input_rows == (1, 3, 5) and t.input_cols == (1, 3, 5)  # output (1, 1) reads every other row from 1


def test_1x1_conv_reduces_64_channels_to_32():
    x = rng.standard_normal((64, 28, 28))
    w = rng.standard_normal((32, 64, 1, 1))
    assert output_shape(28, 1, in_channels=64, out_channels=32).output == (28, 28, 32)
    y = conv2d(x, w)
    assert y.shape == (32, 28, 28)
    # a 1x1 conv is a per-pixel matrix product over channels
    np.testing.assert_allclose(y.reshape(32, -1), w[:, :, 0, 0] @ x.reshape(64, -1), atol=1e-10)
    c = conv_cost(64, 32, 1, (28, 28))
    assert c.params == 64 * 32 + 32 and c.macs == 28 * 28 * 32 * 64


def test_2x2_stride_2_max_pool():
    x = rng.standard_normal((3, 4, 6))
    y = pool2d(x, "max", 2, 2)
    assert y.shape == (3, 2, 3)
    blocks = x.reshape(3, 2, 2, 3, 2).max(axis=(2, 4))  # independent: max over each 2x2 block
    np.testing.assert_array_equal(y, blocks)
    assert output_shape((4, 6), 2, op="maxpool", in_channels=3).output == (2, 3, 3)


def test_three_channel_trace_9_18_18_sums_to_45():
    # Red: a window of ones against a kernel of ones (9). Green: twos against ones (18).
    # Blue: ones against twos (18). The output pixel is the sum over channels.
    img = np.zeros((3, 5, 5))
    img[0] = 1.0
    img[1] = 2.0
    img[2] = 1.0
    img[:, 3:, :] = rng.integers(-5, 5, size=(3, 2, 5))  # rows outside the traced window
    kern = np.stack([np.ones((3, 3)), np.ones((3, 3)), 2 * np.ones((3, 3))])[None]
    t = trace(img, kern, 0, 1)
    assert [c.channel for c in t.channels] == [0, 1, 2]
    assert [c.sum for c in t.channels] == [9.0, 18.0, 18.0]
    assert t.bias == 0.0 and t.total == 45.0
    for c in t.channels:
        np.testing.assert_array_equal(c.products, c.window * c.kernel)
        assert not c.padded.any()
    assert conv2d(img, kern)[0, 0, 1] == 45.0
    oracle = F.conv2d(torch.from_numpy(img)[None], torch.from_numpy(kern))[0, 0, 0, 1].item()
    assert oracle == 45.0
    tb = trace(img, kern, 0, 1, bias=[0.5])
    assert tb.total == 45.5 and tb.bias == 0.5


def test_same_padding_pytorch_rule_extra_on_bottom_right():
    r = output_shape((5, 5), (4, 2), padding="same")
    assert r.output[:2] == (5, 5) and r.padding == (1, 2, 0, 1)
    r = output_shape(7, 3, padding="same", dilation=3)
    assert r.padding == (3, 3, 3, 3)


def test_pool_ceil_mode_drops_window_starting_in_right_padding():
    # in=5, k=2, s=2, pad=1, ceil: ceil((5+2-2)/2)+1 = 4, but window 4 starts at padded index 6 >= 5+1
    r = output_shape(5, 2, op="maxpool", stride=2, padding=1, ceil_mode=True)
    assert r.axes[0].dropped_last and r.output[0] == 3
    assert F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape[-1] == 3
    assert any("drop" in n for n in r.notes)


def test_pad2d_modes_match_torch():
    x = rng.standard_normal((2, 3, 4))
    for mode, tmode in (
        ("zeros", "constant"),
        ("reflect", "reflect"),
        ("replicate", "replicate"),
        ("circular", "circular"),
    ):
        got = pad2d(x, (1, 2, 3, 0), mode)
        want = F.pad(torch.from_numpy(x)[None], (3, 0, 1, 2), mode=tmode)[0].numpy()
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- cost
@pytest.mark.slow
@settings(max_examples=40)
@given(
    cg=st.integers(1, 4),
    fg=st.integers(1, 4),
    groups=st.integers(1, 3),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    size=st.integers(5, 12),
    bias=st.booleans(),
)
def test_conv_cost_matches_torch_param_count_and_flop_counter(cg, fg, groups, k, s, size, bias):
    from torch.utils.flop_counter import FlopCounterMode

    c, f = cg * groups, fg * groups
    m = torch.nn.Conv2d(c, f, k, stride=s, groups=groups, bias=bias)
    x = torch.zeros(1, c, size, size)
    with FlopCounterMode(display=False) as counter:
        y = m(x)
    cost = conv_cost(c, f, k, tuple(y.shape[-2:]), groups=groups, bias=bias)
    assert cost.params == sum(p.numel() for p in m.parameters())
    assert 2 * cost.macs == counter.get_total_flops()  # torch counts 2 FLOPs per MAC, no bias adds
    assert cost.bias_params == (f if bias else 0)
    assert "not counted" in cost.convention


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call",
    [
        lambda: conv2d(np.ones((3, 5, 5)), np.ones((1, 2, 3, 3))),  # mismatched channels
        lambda: conv2d(np.ones((1, 2, 2)), np.ones((1, 1, 3, 3))),  # kernel larger than input
        lambda: conv2d(np.ones((1, 2, 2)), np.ones((1, 1, 5, 5)), padding=1),  # larger than padded input
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), stride=0),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), stride=-1),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), stride=1.5),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), dilation=0),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), padding=-1),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), padding="half"),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), stride=2, padding="same"),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), padding=5, padding_mode="reflect"),
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), padding_mode="mirror"),
        lambda: conv2d(np.ones((4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2),  # F not divisible
        lambda: conv2d(np.ones((1, 5, 5)), np.ones((2, 1, 3, 3)), bias=[1.0]),
        lambda: conv2d([[[1, 2], [3]]], np.ones((1, 1, 1, 1))),  # ragged
        lambda: conv2d([[["a", "b"]]], np.ones((1, 1, 1, 1))),  # non-numeric
        lambda: conv2d([[[1.0, np.nan]]], np.ones((1, 1, 1, 1))),
        lambda: conv2d(np.ones((5, 5)), np.ones((1, 1, 1, 1))),  # 2-D input
        lambda: trace(np.ones((1, 5, 5)), np.ones((1, 1, 3, 3)), 3, 0),  # row out of range
        lambda: pool2d(np.ones((1, 5, 5)), "max", 2, padding=2),  # pad > kernel//2
        lambda: pool2d(np.ones((1, 5, 5)), "avg", 2, dilation=2),
        lambda: pool2d(np.ones((1, 5, 5)), "min", 2),
        lambda: pool2d(np.ones((1, 1, 1)), "max", 3),
        lambda: output_shape(5, 3, op="maxpool", padding="same"),
        lambda: output_shape(5, 3, op="maxpool", ceil_mode=True, convention="tf"),
        lambda: output_shape(5, 3, convention="keras"),
        lambda: output_shape(0, 3),
        lambda: conv_cost(3, 4, 3, 5, groups=2),
    ],
)
def test_bad_input_raises_one_sentence(call):
    with pytest.raises(ConvlensError) as e:
        call()
    msg = str(e.value)
    assert msg and "\n" not in msg and msg.endswith(".")


@pytest.mark.parametrize(
    "module",
    [
        "convlens.arith",
        "convlens.arith.shapes",
        "convlens.arith.conv",
        "convlens.arith.pool",
        "convlens.arith.cost",
        "convlens.arith._check",
    ],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def _never_read_oracle(size: int, out: int, k: int, s: int, d: int, before: int) -> tuple[int, int]:
    """Brute force: enumerate every tap of every window."""
    seen = {i * s + j * d - before for i in range(out) for j in range(k)} & set(range(size))
    return size - len(seen), (size - 1 - max(seen)) if seen else size


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 70),
    k=st.integers(1, 6),
    s=st.integers(1, 7),
    d=st.integers(1, 4),
    before=st.integers(0, 3),
    after=st.integers(0, 3),
    ceil=st.booleans(),
    dense=st.booleans(),
)
def test_never_read_counts_match_brute_force(size, k, s, d, before, after, ceil, dense):
    """Regression: uncovered counts used to allocate an array of the input's length (a 1e9 input hung);
    the periodic count (forced with _DENSE_MAX = 0) must agree with enumerating every tap."""
    import convlens.arith.shapes as shapes

    k_eff = d * (k - 1) + 1
    span = size + before + after
    if span < k_eff:
        return
    out = (-(-(span - k_eff) // s) if ceil else (span - k_eff) // s) + 1
    from unittest import mock

    with mock.patch.object(shapes, "_DENSE_MAX", 4_000_000 if dense else 0):
        assert shapes._covered(size, out, k, s, d, before) == _never_read_oracle(size, out, k, s, d, before)


@settings(max_examples=300, deadline=None)
@given(
    k=st.integers(1, 6),
    s=st.integers(1, 9),
    d=st.integers(1, 5),
    out=st.integers(1, 12),
    lo=st.integers(0, 80),
    span=st.integers(0, 80),
    dense=st.booleans(),
)
def test_covered_positions_in_any_range_match_brute_force(k, s, d, out, lo, span, dense):
    """The (count, largest) covered position of ``lo..hi`` (padded coordinates), by the O(1)/periodic path
    (forced with _DENSE_MAX = 0) and by marking, against enumerating every tap i*s + j*d: ranges that stop
    inside the periodic middle part (no tail) pin that part's own largest position."""
    from unittest import mock

    import convlens.arith.shapes as shapes

    hi = lo + span
    taps = {i * s + j * d for i in range(out) for j in range(k)}
    inside = [q for q in taps if lo <= q <= hi]
    want = (len(inside), max(inside) if inside else None)
    with mock.patch.object(shapes, "_DENSE_MAX", 4_000_000 if dense else 0):
        assert shapes._count_max(lo, hi, k, s, d, out) == want


@pytest.mark.timeout(10)
def test_huge_input_sizes_are_instant():
    r = output_shape((10**9, 3 * 10**9), (3, 5), stride=(2, 3), dilation=(3, 1), in_channels=3, out_channels=8)
    assert r.output == ((10**9 - 7) // 2 + 1, (3 * 10**9 - 5) // 3 + 1, 8)
    # H: taps at even i*2 + {0, 3, 6}: row 1, row 10**9 - 3 and the last row are never read
    assert (r.axes[0].uncovered, r.axes[0].uncovered_tail) == (3, 1)
    # W: (3e9 - 5) / 3 = 999999998.33 windows -> the last column is never read
    assert (r.axes[1].uncovered, r.axes[1].uncovered_tail) == (1, 1)


@pytest.mark.timeout(10)
def test_a_stride_beyond_int64_counts_from_the_period():
    """A huge stride with a huge input: only the taps near the last window are marked, never a stride's worth of
    rows. 10**20 rows, kernel 2, dilation 2 (k_eff 3), stride 10**18: out = floor((10**20 - 3) / 10**18) + 1 = 100
    windows with taps at 10**18 i + {0, 2}, 200 distinct rows read, so 10**20 - 200 never read; the last tap is
    row 99 * 10**18 + 2, so 10**20 - 1 - (99 * 10**18 + 2) = 10**18 - 3 rows after it."""
    r = output_shape((10**20, 7), 2, stride=(10**18, 1), dilation=2)
    assert r.output[0] == 100
    assert (r.axes[0].uncovered, r.axes[0].uncovered_tail) == (10**20 - 200, 10**18 - 3)


def test_sizes_beyond_int64_count_exactly():
    """Regression: a dilated kernel on a 1e20 input overflowed int64 in the never-read count."""

    def never_read(n: int) -> int:
        return output_shape((n, 7), 2, stride=5, dilation=2).axes[0].uncovered

    # taps at 5i and 5i+2: 3 of every 5 rows are never read
    assert never_read(10**20) == 6 * 10**19
    assert never_read(10**20 + 5) - never_read(10**20) == 3 == never_read(10**6 + 5) - never_read(10**6)
