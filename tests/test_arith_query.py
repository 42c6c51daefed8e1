"""convlens.arith.query (the text front door of ``convlens shape`` and the playground), the run
wrappers (conv_run / pool_run) and the exact explanation texts of the resample/cost derivations.

Oracles: torch modules built with the same settings (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
nn.ConvTranspose2d, nn.Upsample) and hand computations written out in comments. Texts shown to
students (derivations, axis labels, formulas, notes, error sentences) are asserted exactly.
Everything here is small: the whole file runs in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.arith import conv2d, conv_cost, output_shape, pad2d, pool2d, pool_trace, resolve_padding, trace
from convlens.arith.cost import MAC_CONVENTION, ConvCost
from convlens.arith.query import QUERY_OPS, parse_padding, parse_pair, parse_size, shape_query
from convlens.arith.resample import ResampleAxis, ResampleShape, transposed_shape, upsample_shape
from convlens.arith.run import conv_run, pool_run
from convlens.arith.shapes import AxisShape
from convlens.errors import InputError

TOL = 1e-12


def _raises(call, message: str) -> None:
    """``call()`` raises InputError with exactly ``message`` (which names the offending argument)."""
    with pytest.raises(InputError) as e:
        call()
    assert str(e.value) == message


def _out_hwc(module: nn.Module, h: int, w: int, c: int) -> tuple[int, int, int]:
    """The oracle: run ``module`` on a zero (1, C, H, W) tensor and read (H_out, W_out, C_out)."""
    with torch.no_grad():
        y = module(torch.zeros(1, c, h, w))
    return (y.shape[2], y.shape[3], y.shape[1])


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parsers
def test_parse_size_notations():
    assert parse_size("4x5x3") == (4, 5, 3)  # default: HxWxC
    assert parse_size("3x4x5", channels_first=True) == (4, 5, 3)  # CxHxW -> (H, W, C)
    assert parse_size("128×128×32") == (128, 128, 32)  # the multiplication sign
    assert parse_size("7,6,2") == (7, 6, 2)
    assert parse_size(" 1 X 5 x 1 ") == (1, 5, 1)  # case, spaces; 1 is a valid size


@pytest.mark.parametrize(
    "text, kw, message",
    [
        ("128x128", {}, "--input must look like HxWxC with three positive integers (e.g. 128x128x32), got '128x128'."),
        ("1x2", {}, "--input must look like HxWxC with three positive integers (e.g. 128x128x32), got '1x2'."),
        ("axbxc", {}, "--input must look like HxWxC with three positive integers (e.g. 128x128x32), got 'axbxc'."),
        (
            "3x4",
            {"channels_first": True},
            "--input must look like CxHxW with three positive integers (e.g. 128x128x32), got '3x4'.",
        ),
        (
            "3x4",
            {"name": "--size"},
            "--size must look like HxWxC with three positive integers (e.g. 128x128x32), got '3x4'.",
        ),
        ("0x5x3", {}, "--input sizes must be >= 1, got '0x5x3'."),
        ("5x0x3", {}, "--input sizes must be >= 1, got '5x0x3'."),
        ("5x5x0", {}, "--input sizes must be >= 1, got '5x5x0'."),
        ("0x5x3", {"channels_first": True}, "--input sizes must be >= 1, got '0x5x3'."),  # C = 0
    ],
)
def test_parse_size_errors_name_the_flag(text, kw, message):
    _raises(lambda: parse_size(text, **kw), message)


def test_parse_pair_notations():
    assert parse_pair("3", "--kernel") == 3
    assert parse_pair("3x5", "--kernel") == (3, 5)  # rows x cols, in that order
    assert parse_pair("3X5", "--kernel") == (3, 5)
    assert parse_pair("3×5", "--kernel") == (3, 5)
    assert parse_pair("3,5", "--kernel") == (3, 5)
    assert parse_pair(" 2 , 4 ", "--stride") == (2, 4)


@pytest.mark.parametrize("text", ["1x2x3", "1,2,3", "3x", "x", "-1", "2.5", "a"])
def test_parse_pair_errors_name_the_flag(text):
    _raises(
        lambda: parse_pair(text, "--stride"),
        f"--stride must be an int or a pair like 3x5 (rows x cols), got '{text}'.",
    )


def test_parse_padding_notations():
    assert parse_padding("same") == "same"
    assert parse_padding(" Same ") == "same"
    assert parse_padding("VALID") == "valid"
    assert parse_padding("1") == 1
    assert parse_padding("1,2") == (1, 2)
    assert parse_padding("1x2") == (1, 2)
    assert parse_padding("1X2") == (1, 2)
    assert parse_padding("0,1,2,3") == (0, 1, 2, 3)


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5", "full", "-1", "1,a"])
def test_parse_padding_errors_name_the_flag(text):
    tail = f"must be valid, same, N, 'ph,pw' or 'top,bottom,left,right' (non-negative ints), got '{text}'."
    _raises(lambda: parse_padding(text), "--padding " + tail)
    _raises(lambda: parse_padding(text, "--pad"), "--pad " + tail)


# ---------------------------------------------------------------- shape_query: conv against nn.Conv2d
def test_course_example_63_torch_and_64_tf_same():
    # 128x128x32, sixteen 3x3 filters, stride 2: floor((128 - 3)/2) + 1 = floor(62.5) + 1 = 63 (torch);
    # TF 'same': ceil(128/2) = 64. params = 16*32*3*3 + 16 = 4624 either way
    q = shape_query("128x128x32", "3", stride="2", filters=16)
    conv = nn.Conv2d(32, 16, 3, stride=2, device="meta")
    with torch.no_grad():
        y = conv(torch.empty(1, 32, 128, 128, device="meta"))
    assert q.result.output == (y.shape[2], y.shape[3], y.shape[1]) == (63, 63, 16)
    assert q.cost.params == _numel(conv) == 4624
    assert q.cost.macs == 63 * 63 * 16 * 32 * 3 * 3  # 18289152
    tf = shape_query("128x128x32", "3", stride="2", padding="same", convention="tf", filters=16)
    assert tf.result.output == (64, 64, 16)
    assert tf.result.convention == "tf"
    assert tf.result.padding == (0, 1, 0, 1)  # pad total = (64-1)*2 + 3 - 128 = 1, the extra one after
    assert tf.cost.macs == 64 * 64 * 16 * 32 * 3 * 3


def test_conv_defaults_stride_1_no_padding_bias_and_hwc():
    # defaults: stride 1, padding 0, dilation 1, groups 1, bias, HxWxC, torch
    q = shape_query("7x5x3", "3", filters=4)
    conv = nn.Conv2d(3, 4, 3)
    assert q.result.output == _out_hwc(conv, 7, 5, 3) == (5, 3, 4)
    assert q.result.op == "conv" and q.result.convention == "torch" and q.result.ceil_mode is False
    assert (q.result.stride, q.result.dilation, q.result.padding) == ((1, 1), (1, 1), (0, 0, 0, 0))
    assert q.cost.params == _numel(conv) == 4 * 3 * 3 * 3 + 4  # 112
    assert q.cost.bias is True and q.cost.groups == 1
    assert shape_query("7x5x3", "3", filters=4, output_padding="0").result.output == (5, 3, 4)
    assert shape_query("7x5x3", "3", filters=4, output_padding=0).result.output == (5, 3, 4)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    "kw, module",
    [
        # text pairs: kernel 3x2, stride 2x1, padding 1x0, dilation 2x1 on 9x8x4
        (
            dict(kernel="3x2", stride="2x1", padding="1x0", dilation="2x1", filters=6),
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
        ),
        # the same as tuples/ints
        (
            dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), filters=6),
            nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
        ),
        (dict(kernel=3, stride=2, padding=1, dilation=1, filters=6), nn.Conv2d(4, 6, 3, stride=2, padding=1)),
        (dict(kernel="3", dilation="2", filters=2), nn.Conv2d(4, 2, 3, dilation=2)),
        (dict(kernel="3", dilation=(1, 3), filters=2), nn.Conv2d(4, 2, 3, dilation=(1, 3))),
        # grouped, no bias: 4 input channels, 6 filters in 2 groups
        (dict(kernel="3", filters=6, groups=2, bias=False), nn.Conv2d(4, 6, 3, groups=2, bias=False)),
        (dict(kernel="1", filters=1), nn.Conv2d(4, 1, 1)),
        # 'same' (stride 1) pads d*(k-1) = 3: 1 before, 2 after
        (dict(kernel="4", padding="same", filters=3), nn.Conv2d(4, 3, 4, padding="same")),
    ],
)
def test_conv_query_matches_nn_conv2d(kw, module):
    q = shape_query("9x8x4", **kw)
    assert q.result.output == _out_hwc(module, 9, 8, 4)
    assert q.result.input == (9, 8, 4)
    assert q.cost.params == _numel(module)
    kh, kw_ = module.kernel_size
    ho, wo, f = q.result.output
    assert q.cost.macs == ho * wo * f * (4 // module.groups) * kh * kw_  # one MAC per weight per output


def test_conv_query_four_sided_padding_and_channels_first():
    # top 0, bottom 1, left 2, right 3 on 6x5: H = 6 + 1 - 3 + 1 = 5, W = 5 + 5 - 3 + 1 = 8
    q = shape_query("2x6x5", "3", padding="0,1,2,3", filters=4, channels_first=True)
    x = F.pad(torch.zeros(1, 2, 6, 5), (2, 3, 0, 1))  # F.pad takes (left, right, top, bottom)
    assert q.result.output == _out_hwc(nn.Conv2d(2, 4, 3), x.shape[2], x.shape[3], 2) == (5, 8, 4)
    assert q.result.padding == (0, 1, 2, 3)
    assert q.result.input == (6, 5, 2)
    assert shape_query((6, 5, 2), 3, padding=(0, 1, 2, 3), filters=4).result.output == (5, 8, 4)


def test_conv_query_cost_and_to_dict_exact():
    # 6x7x6 input, four (3x2) filters in 2 groups, no bias, stride 1: 4x6 output
    # weights = F*(C/groups)*kh*kw = 4*3*3*2 = 72, bias 0; MACs = 4*6*4*3*3*2 = 1728
    q = shape_query("6x7x6", "3x2", filters=4, groups=2, bias=False)
    conv = nn.Conv2d(6, 4, (3, 2), groups=2, bias=False)
    assert q.result.output == _out_hwc(conv, 6, 7, 6) == (4, 6, 4)
    assert _numel(conv) == 72
    want = ConvCost(
        in_channels=6,
        out_channels=4,
        kernel=(3, 2),
        groups=2,
        output_hw=(4, 6),
        bias=False,
        weight_params=72,
        bias_params=0,
        params=72,
        macs=1728,
        params_formula="F*(C/groups)*kh*kw + bias = 4*3*3*2 + 0 = 72",
        macs_formula="H_out*W_out*F*(C/groups)*kh*kw = 4*6*4*3*3*2 = 1728",
        convention=MAC_CONVENTION,
    )
    assert q.cost == want
    d = q.to_dict()
    assert d["output"] == [4, 6, 4] and d["op"] == "conv"
    assert d["cost"] == {
        "in_channels": 6,
        "out_channels": 4,
        "kernel": [3, 2],
        "groups": 2,
        "output_hw": [4, 6],
        "bias": False,
        "weight_params": 72,
        "bias_params": 0,
        "params": 72,
        "macs": 1728,
        "params_formula": "F*(C/groups)*kh*kw + bias = 4*3*3*2 + 0 = 72",
        "macs_formula": "H_out*W_out*F*(C/groups)*kh*kw = 4*6*4*3*3*2 = 1728",
        "convention": MAC_CONVENTION,
    }
    pool = shape_query("4x4x1", "2", op="maxpool").to_dict()
    assert pool["output"] == [2, 2, 1] and "cost" in pool and pool["cost"] is None


def test_conv_cost_exact_with_bias():
    # sixteen 3x3x32 filters at a 63x63 output: 16*32*3*3 = 4608 weights + 16 biases = 4624;
    # MACs = 63*63*16*32*3*3 = 3969*4608 = 18289152
    c = conv_cost(32, 16, 3, (63, 63))
    assert c == ConvCost(
        32,
        16,
        (3, 3),
        1,
        (63, 63),
        True,
        4608,
        16,
        4624,
        18289152,
        "F*(C/groups)*kh*kw + bias = 16*32*3*3 + 16 = 4624",
        "H_out*W_out*F*(C/groups)*kh*kw = 63*63*16*32*3*3 = 18289152",
        MAC_CONVENTION,
    )
    assert conv_cost(32, 16, 3, (63, 63), bias=False).params == 4608


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: conv_cost(0, 4, 3, 5), "in_channels must be a positive int, got 0."),
        (lambda: conv_cost(True, 4, 3, 5), "in_channels must be a positive int, got True."),
        (lambda: conv_cost(3, 0, 3, 5), "out_channels must be a positive int, got 0."),
        (lambda: conv_cost(3, 3.0, 3, 5), "out_channels must be a positive int, got 3.0."),
        (lambda: conv_cost(3, 3, 3, 5, groups=0), "groups must be a positive int, got 0."),
        (lambda: conv_cost(3, 3, 0, 5), "kernel must be >= 1, got 0."),
        (lambda: conv_cost(3, 3, 3, 0), "output size must be >= 1, got 0."),
    ],
)
def test_conv_cost_errors_name_the_argument(call, message):
    _raises(call, message)


# ---------------------------------------------------------------- shape_query: pools
@pytest.mark.parametrize(
    "text, kw, module",
    [
        ("8x8x3", dict(kernel="2", op="maxpool"), nn.MaxPool2d(2)),  # stride defaults to the kernel
        ("9x7x2", dict(kernel="3", op="maxpool"), nn.MaxPool2d(3)),
        ("9x7x2", dict(kernel="3x2", op="maxpool"), nn.MaxPool2d((3, 2))),
        ("9x7x2", dict(kernel=(3, 2), op="avgpool"), nn.AvgPool2d((3, 2))),
        ("9x7x2", dict(kernel="3", stride="2", padding="1", op="avgpool"), nn.AvgPool2d(3, 2, 1)),
        ("9x7x2", dict(kernel="3", stride="1x2", op="maxpool", dilation="2"), nn.MaxPool2d(3, (1, 2), dilation=2)),
        ("5x5x1", dict(kernel="2", op="maxpool", ceil_mode=True), nn.MaxPool2d(2, ceil_mode=True)),  # 3x3
        (
            "6x6x1",
            dict(kernel="3", stride="2", padding="1", op="avgpool", ceil_mode=True),
            nn.AvgPool2d(3, 2, 1, ceil_mode=True),
        ),
    ],
)
def test_pool_query_matches_nn_pools(text, kw, module):
    q = shape_query(text, **kw)
    h, w, c = parse_size(text)
    assert q.result.output == _out_hwc(module, h, w, c)
    assert q.cost is None
    assert q.result.op == kw["op"]
    assert q.result.ceil_mode is kw.get("ceil_mode", False)


def test_pool_query_tf_same():
    # TF 'SAME' max pool 2 on 5x5: ceil(5/2) = 3
    q = shape_query("5x5x3", "2", op="maxpool", padding="same", convention="tf")
    assert q.result.output == (3, 3, 3)
    assert q.result.padding == (0, 1, 0, 1)  # (3-1)*2 + 2 - 5 = 1, after


# ---------------------------------------------------------------- shape_query: convtranspose
TORCH_T_NOTE = (
    "TensorFlow/Keras Conv2DTranspose has no numeric padding: 'same' gives in*stride, "
    "'valid' gives in*stride + max(k_eff - stride, 0)."
)
TF_T_NOTE = "PyTorch's ConvTranspose2d: out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1."
TORCH_T_FORMULA = "out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1"


def test_convtranspose_worked_example_exact():
    # H: (5 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 8 - 2 + 2 + 2 = 10
    # W: (4 - 1)*3 - 2*0 + 2*(2 - 1) + 2 + 1 = 9 + 2 + 3 = 14
    # params = C_in*(F/groups)*kh*kw + F = 4*3*3*2 + 6 = 78; MACs = 5*4*4*3*3*2 = 1440
    # the forward Conv2d maps 10 -> (10 + 2 - 2 - 1)//2 + 1 = 5 and 14 -> (14 + 0 - 2 - 1)//3 + 1 = 4
    r = transposed_shape(
        (5, 4),
        (3, 2),
        stride=(2, 3),
        padding=(1, 0),
        output_padding=(1, 2),
        dilation=(1, 2),
        in_channels=4,
        out_channels=6,
        groups=2,
    )
    m = nn.ConvTranspose2d(
        4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2), groups=2
    )
    assert _out_hwc(m, 5, 4, 4) == (10, 14, 6) and _numel(m) == 78
    assert r == ResampleShape(
        "convtranspose",
        "torch",
        (5, 4, 4),
        (10, 14, 6),
        (3, 2),
        (2, 3),
        (1, 2),
        (1, 1, 0, 0),
        (1, 2),
        None,
        TORCH_T_FORMULA,
        (
            ResampleAxis("H", 5, 10, "(5 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 10"),
            ResampleAxis("W", 4, 14, "(4 - 1)*3 - 2*0 + 2*(2 - 1) + 2 + 1 = 14"),
        ),
        (
            "a Conv2d with the same kernel/stride/padding maps 10x14 back to 5x4; it maps several sizes to one, "
            "and output_padding (bottom/right) chooses which the transpose returns.",
            TORCH_T_NOTE,
        ),
        78,
        1440,
    )
    assert type(r.params) is int and type(r.macs) is int  # counts, printed as 78 (not 78.0) in the JSON
    q = shape_query(
        "5x4x4",
        "3x2",
        op="convtranspose",
        stride="2x3",
        padding="1x0",
        output_padding="1x2",
        dilation="1x2",
        filters=6,
        groups=2,
    )
    assert q.result == r and q.cost is None


def test_convtranspose_inverse_note_on_exact_sizes():
    # 3x3, k=3, s=2, p=2, d=2: (3 - 1)*2 - 2*2 + 2*(3 - 1) + 0 + 1 = 5; the forward conv maps
    # 5 -> (5 + 4 - 4 - 1)//2 + 1 = 3 (no output_padding: the numerator 4 is exactly (3-1)*2)
    r = transposed_shape(3, 3, stride=2, padding=2, dilation=2)
    assert _out_hwc(nn.ConvTranspose2d(1, 1, 3, stride=2, padding=2, dilation=2), 3, 3, 1)[:2] == (5, 5)
    assert r.output == (5, 5, None) and r.params is None and r.macs is None
    assert r.axes[0].substituted == "(3 - 1)*2 - 2*2 + 2*(3 - 1) + 0 + 1 = 5"
    assert r.notes[0].startswith("a Conv2d with the same kernel/stride/padding maps 5x5 back to 3x3;")
    # (7, 1) stride pair: only H is strided, the note still explains it
    assert transposed_shape(3, 3, stride=(2, 1)).notes[0].startswith("a Conv2d with the same kernel/stride/padding")
    assert transposed_shape(3, 3, stride=(1, 2)).notes[0].startswith("a Conv2d with the same kernel/stride/padding")


def test_convtranspose_stride_1_defaults_and_params_without_both_channels():
    # defaults: stride 1, padding 0, output_padding 0, dilation 1, groups 1, bias:
    # (4 - 1)*1 - 2*0 + 1*(2 - 1) + 0 + 1 = 5; params = 3*2*2*2 + 2 = 26; MACs = 4*4*3*2*2*2 = 384
    r = transposed_shape(4, 2, in_channels=3, out_channels=2)
    m = nn.ConvTranspose2d(3, 2, 2)
    assert r.output == _out_hwc(m, 4, 4, 3) == (5, 5, 2)
    assert (r.params, r.macs) == (_numel(m), 384) == (26, 384)
    assert r.axes[1] == ResampleAxis("W", 4, 5, "(4 - 1)*1 - 2*0 + 1*(2 - 1) + 0 + 1 = 5")
    assert r.notes == (TORCH_T_NOTE,)  # stride 1: no many-to-one note
    assert r.padding == (0, 0, 0, 0) and r.stride == (1, 1) and r.dilation == (1, 1) and r.output_padding == (0, 0)
    only_in = transposed_shape(4, 2, in_channels=3)
    assert only_in.params is None and only_in.macs is None and only_in.output == (5, 5, None)
    nb = transposed_shape(4, 2, in_channels=3, out_channels=2, bias=False)
    assert nb.params == _numel(nn.ConvTranspose2d(3, 2, 2, bias=False)) == 24


@pytest.mark.parametrize(
    "kw, module",
    [
        (dict(kernel="3", stride="2", padding="1", output_padding="1"), nn.ConvTranspose2d(4, 6, 3, 2, 1, 1)),
        (dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0)), nn.ConvTranspose2d(4, 6, (3, 2), (2, 1), (1, 0))),
        (dict(kernel="2", stride=None), nn.ConvTranspose2d(4, 6, 2)),  # stride defaults to 1
        (dict(kernel="2", output_padding=None, stride="1"), nn.ConvTranspose2d(4, 6, 2)),
        (
            dict(kernel="3", dilation="2", stride="2", output_padding=1),
            nn.ConvTranspose2d(4, 6, 3, 2, dilation=2, output_padding=1),
        ),
        (dict(kernel="3", dilation=(2, 1)), nn.ConvTranspose2d(4, 6, 3, dilation=(2, 1))),
        (dict(kernel="3", groups=2, bias=False), nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False)),
        (dict(kernel="3", padding="1,2"), nn.ConvTranspose2d(4, 6, 3, padding=(1, 2))),
    ],
)
def test_convtranspose_query_matches_torch(kw, module):
    q = shape_query("5x6x4", op="convtranspose", filters=6, **kw)
    assert q.result.output == _out_hwc(module, 5, 6, 4)
    assert q.result.params == _numel(module)
    kh, kw_ = module.kernel_size
    assert q.result.macs == 5 * 6 * 4 * (6 // module.groups) * kh * kw_


def test_keras_transposed_texts_exact():
    # k_eff: H 3, W 2*(2 - 1) + 1 = 3. valid: H 5*2 + max(3 - 2, 0) = 11, W 4*3 + max(3 - 3, 0) = 12
    valid = transposed_shape((5, 4), (3, 2), stride=(2, 3), dilation=(1, 2), padding="valid", convention="tf")
    assert valid.output[:2] == (11, 12)
    assert valid.axes == (
        ResampleAxis("H", 5, 11, "5*2 + max(3 - 2, 0) = 11"),
        ResampleAxis("W", 4, 12, "4*3 + max(3 - 3, 0) = 12"),
    )
    assert valid.formula == "out = in*stride + max(k_eff - stride, 0); k_eff = dilation*(kernel-1) + 1"
    assert valid.notes == (TF_T_NOTE,)
    assert (valid.convention, valid.padding, valid.op) == ("tf", "valid", "convtranspose")
    # same: in*stride -> 5*2 = 10, 4*3 = 12
    same = transposed_shape((5, 4), (3, 2), stride=(2, 3), dilation=(1, 2), padding="SAME", convention="tf")
    assert same.axes == (ResampleAxis("H", 5, 10, "5*2 = 10"), ResampleAxis("W", 4, 12, "4*3 = 12"))
    assert same.formula == "out = in*stride; k_eff = dilation*(kernel-1) + 1"
    assert same.padding == "same"
    # output_padding given: (in - 1)*s + k_eff - 2*pad + op with pad = k_eff//2 = 1 ('same') or 0 ('valid')
    # same: (5 - 1)*2 + 3 - 2*1 + 1 = 10; (4 - 1)*3 + 3 - 2*1 + 2 = 12
    op_same = transposed_shape(
        (5, 4), (3, 2), stride=(2, 3), dilation=(1, 2), padding="same", output_padding=(1, 2), convention="tf"
    )
    assert op_same.axes == (
        ResampleAxis("H", 5, 10, "(5 - 1)*2 + 3 - 2*1 + 1 = 10"),
        ResampleAxis("W", 4, 12, "(4 - 1)*3 + 3 - 2*1 + 2 = 12"),
    )
    assert op_same.formula == (
        "out = (in - 1)*stride + k_eff - 2*pad + output_padding, pad = k_eff//2 ('same') or 0; "
        "k_eff = dilation*(kernel-1) + 1"
    )
    # valid: (5 - 1)*2 + 3 - 2*0 + 1 = 12; (4 - 1)*3 + 3 - 2*0 + 2 = 14
    op_valid = transposed_shape(
        (5, 4), (3, 2), stride=(2, 3), dilation=(1, 2), padding="valid", output_padding=(1, 2), convention="tf"
    )
    assert [a.substituted for a in op_valid.axes] == ["(5 - 1)*2 + 3 - 2*0 + 1 = 12", "(4 - 1)*3 + 3 - 2*0 + 2 = 14"]
    # an all-zero output_padding, as a tuple or a list, is "not given"
    for zero in ((0, 0), [0, 0], 0):
        assert (
            transposed_shape(
                (5, 4), (3, 2), stride=(2, 3), dilation=(1, 2), padding="valid", output_padding=zero, convention="tf"
            )
            == valid
        )
    # through the query: tf passes the padding text through
    q = shape_query(
        "5x4x2", "3x2", op="convtranspose", stride="2x3", dilation="1x2", padding="valid", convention="tf", filters=3
    )
    assert q.result.axes == valid.axes and q.result.output == (11, 12, 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: transposed_shape(0, 3), "input size must be >= 1, got 0."),
        (lambda: transposed_shape(4, 0), "kernel must be >= 1, got 0."),
        (lambda: transposed_shape(4, 3, stride=0), "stride must be >= 1, got 0."),
        (lambda: transposed_shape(4, 3, dilation=0), "dilation must be >= 1, got 0."),
        (lambda: transposed_shape(4, 3, output_padding=-1), "output_padding must be >= 0, got -1."),
        (lambda: transposed_shape(4, 3, padding=-1), "padding must be >= 0, got -1."),
        (lambda: transposed_shape(4, 3, convention="keras"), "convention must be 'torch' or 'tf', got 'keras'."),
        (
            lambda: transposed_shape(4, 3, padding="same"),
            "PyTorch's ConvTranspose2d takes a numeric padding, not 'same' (use convention 'tf').",
        ),
        (
            lambda: transposed_shape(4, 3, stride=(1, 2), output_padding=(0, 2)),
            "output_padding 2 on W must be smaller than stride or dilation (max(2, 1) = 2), as PyTorch requires.",
        ),
        (
            lambda: transposed_shape(4, 3, stride=(2, 1), output_padding=(2, 0)),
            "output_padding 2 on H must be smaller than stride or dilation (max(2, 1) = 2), as PyTorch requires.",
        ),
        (
            lambda: transposed_shape(4, 3, padding=1, convention="tf"),
            "Keras' Conv2DTranspose takes padding 'same' or 'valid', got '1'.",
        ),
        (
            lambda: transposed_shape(4, 3, stride=2, padding="valid", output_padding=(2, 0), convention="tf"),
            "output_padding 2 on H must be smaller than the stride 2 (Keras).",
        ),
        (
            lambda: transposed_shape(4, 3, stride=(1, 2), padding="same", output_padding=(0, 2), convention="tf"),
            "output_padding 2 on W must be smaller than the stride 2 (Keras).",
        ),
        (
            lambda: transposed_shape(1, 1, padding=1),
            "the output would be -1x-1: padding removes more than the layer produces.",
        ),
        (
            lambda: transposed_shape(4, 3, in_channels=3, out_channels=6, groups=2),
            "groups 2 must divide in_channels 3 and out_channels 6.",
        ),
        (
            lambda: transposed_shape(4, 3, in_channels=4, out_channels=3, groups=2),
            "groups 2 must divide in_channels 4 and out_channels 3.",
        ),
        (
            lambda: transposed_shape(4, 3, in_channels=4, out_channels=4, groups=0),
            "groups 0 must divide in_channels 4 and out_channels 4.",
        ),
    ],
)
def test_transposed_errors_name_the_argument(call, message):
    _raises(call, message)


# ---------------------------------------------------------------- upsample
UPSAMPLE_NOTE = (
    "the mode (nearest, bilinear, bicubic) changes the values, not the shape; no parameters, no MACs; "
    "Keras UpSampling2D takes integer factors only (out = in * size).",
)


def test_upsample_size_branch_exact():
    r = upsample_shape((5, 6), size=(9, 4), in_channels=3)
    assert _out_hwc(nn.Upsample(size=(9, 4)), 5, 6, 3) == (9, 4, 3)
    assert r == ResampleShape(
        "upsample",
        "torch",
        (5, 6, 3),
        (9, 4, 3),
        None,
        None,
        None,
        None,
        None,
        None,
        "out = size",
        (ResampleAxis("H", 5, 9, "size 9"), ResampleAxis("W", 6, 4, "size 4")),
        UPSAMPLE_NOTE,
        0,
        0,
    )


def test_upsample_scale_branch_exact():
    # floor(5 * 1.5) = 7, floor(6 * 2) = 12
    r = upsample_shape((5, 6), (1.5, 2.0), in_channels=3)
    assert _out_hwc(nn.Upsample(scale_factor=(1.5, 2.0)), 5, 6, 3) == (7, 12, 3)
    assert r == ResampleShape(
        "upsample",
        "torch",
        (5, 6, 3),
        (7, 12, 3),
        None,
        None,
        None,
        None,
        None,
        (1.5, 2.0),
        "out = floor(in * scale_factor)",
        (ResampleAxis("H", 5, 7, "floor(5 * 1.5) = 7"), ResampleAxis("W", 6, 12, "floor(6 * 2) = 12")),
        UPSAMPLE_NOTE,
        0,
        0,
    )
    two = upsample_shape(7, 2)  # an int factor applies to both axes
    assert two.output == (14, 14, None) and two.scale_factor == (2.0, 2.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: upsample_shape(4), "give exactly one of scale_factor and size for upsampling."),
        (lambda: upsample_shape(4, 2, size=8), "give exactly one of scale_factor and size for upsampling."),
        (lambda: upsample_shape(4, size=0), "size must be >= 1, got 0."),
        (lambda: upsample_shape(0, 2), "input size must be >= 1, got 0."),
        (lambda: upsample_shape(4, 0), "scale_factor must be a positive number or a pair, got 0."),
        (lambda: upsample_shape(4, -2.0), "scale_factor must be a positive number or a pair, got -2.0."),
        (lambda: upsample_shape(4, math.inf), "scale_factor must be a positive number or a pair, got inf."),
        (lambda: upsample_shape(4, (2.0,)), "scale_factor must be a positive number or a pair, got (2.0,)."),
        (lambda: upsample_shape(4, (2, 2, 2)), "scale_factor must be a positive number or a pair, got (2, 2, 2)."),
        (lambda: upsample_shape(4, ("2", 2)), "scale_factor must be a positive number or a pair, got ('2', 2)."),
        (lambda: upsample_shape(1, 0.5), "upsampling H=1 by 0.5 gives 0 rows/cols; the scale is too small."),
        (lambda: upsample_shape((4, 1), 0.5), "upsampling W=1 by 0.5 gives 0 rows/cols; the scale is too small."),
    ],
)
def test_upsample_errors_name_the_argument(call, message):
    _raises(call, message)


@pytest.mark.parametrize(
    "scale, factor",
    [
        ("2", 2.0),
        (2, 2.0),
        (1.5, 1.5),
        ("2x1.5", (2.0, 1.5)),
        ("2×1.5", (2.0, 1.5)),
        ("2,1.5", (2.0, 1.5)),
        ("2X1.5", (2.0, 1.5)),
    ],
)
def test_upsample_query_matches_nn_upsample(scale, factor):
    q = shape_query("5x7x3", None, op="upsample", scale=scale)
    assert q.result.output == _out_hwc(nn.Upsample(scale_factor=factor), 5, 7, 3)
    pair = factor if isinstance(factor, tuple) else (factor, factor)
    assert q.result.scale_factor == pair and q.cost is None


# ---------------------------------------------------------------- shape_query: bad input names the flag
@pytest.mark.parametrize(
    "args, kw, message",
    [
        (
            ("5x5", "3"),
            {"filters": 2},
            "--input must look like HxWxC with three positive integers (e.g. 128x128x32), got '5x5'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "pool"},
            "--op must be one of conv, maxpool, avgpool, convtranspose, upsample; got 'pool'.",
        ),
        (
            ("5x5x3", None),
            {"op": "upsample"},
            "--op upsample needs --scale (a factor like 2, or 2x1.5 for rows x cols).",
        ),
        (
            ("5x5x3", None),
            {"op": "upsample", "scale": "big"},
            "--scale must be a number or a pair like 2x1.5 (rows x cols), got 'big'.",
        ),
        (
            ("5x5x3", None),
            {"op": "upsample", "scale": "1x2x3"},
            "--scale must be a number or a pair like 2x1.5 (rows x cols), got '1x2x3'.",
        ),
        (("5x5x3", None), {"filters": 2}, "--kernel is required for --op conv."),
        (("5x5x3", None), {"op": "maxpool"}, "--kernel is required for --op maxpool."),
        (
            ("5x5x3", "3"),
            {"filters": 2, "output_padding": "1"},
            "--output-padding belongs to --op convtranspose (a transposed convolution).",
        ),
        (
            ("5x5x3", "3"),
            {"op": "maxpool", "output_padding": 1},
            "--output-padding belongs to --op convtranspose (a transposed convolution).",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose"},
            "--filters is required for --op convtranspose (the number of output channels F).",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "padding": "1,1,1,1"},
            "ConvTranspose2d pads symmetrically: give --padding N or ph,pw.",
        ),
        (
            ("5x5x3", "3x"),
            {"op": "convtranspose", "filters": 2},
            "--kernel must be an int or a pair like 3x5 (rows x cols), got '3x'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "stride": "2x"},
            "--stride must be an int or a pair like 3x5 (rows x cols), got '2x'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "dilation": "a"},
            "--dilation must be an int or a pair like 3x5 (rows x cols), got 'a'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "output_padding": "1x1x1"},
            "--output-padding must be an int or a pair like 3x5 (rows x cols), got '1x1x1'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "padding": "full"},
            "--padding must be valid, same, N, 'ph,pw' or 'top,bottom,left,right' (non-negative ints), got 'full'.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "convtranspose", "filters": 2, "padding": "1x1", "convention": "tf"},
            "Keras' Conv2DTranspose takes padding 'same' or 'valid', got '1x1'.",
        ),
        (("5x5x3", "3"), {"filters": 2, "convention": "keras"}, "--convention must be one of torch, tf; got 'keras'."),
        (
            ("5x5x3", "3"),
            {"filters": 2, "ceil_mode": True},
            "--ceil-mode is a pooling option (--op maxpool/avgpool); PyTorch convolutions always round down.",
        ),
        (
            ("5x5x3", "3"),
            {"op": "maxpool", "filters": 4},
            "--filters and --groups describe convolutions; --op maxpool keeps the 3 input channel(s).",
        ),
        (
            ("5x5x3", "3"),
            {"op": "avgpool", "groups": 2},
            "--filters and --groups describe convolutions; --op avgpool keeps the 3 input channel(s).",
        ),
        (("5x5x3", "3"), {}, "--filters is required for --op conv (the number of output channels F)."),
        (("5x5x3", "3"), {"filters": 0}, "--filters must be >= 1, got 0."),
        (("5x5x3", "3"), {"filters": -2}, "--filters must be >= 1, got -2."),
        (
            ("5x5x3", "3"),
            {"filters": 4, "groups": 2},
            "--groups 2 must be >= 1 and divide both the input channels (3) and --filters (4).",
        ),
        (
            ("5x5x4", "3"),
            {"filters": 3, "groups": 2},
            "--groups 2 must be >= 1 and divide both the input channels (4) and --filters (3).",
        ),
        (
            ("5x5x4", "3"),
            {"filters": 4, "groups": 0},
            "--groups 0 must be >= 1 and divide both the input channels (4) and --filters (4).",
        ),
        (("5x5x3", "3x"), {"filters": 2}, "--kernel must be an int or a pair like 3x5 (rows x cols), got '3x'."),
        (
            ("5x5x3", "3"),
            {"filters": 2, "stride": "2x"},
            "--stride must be an int or a pair like 3x5 (rows x cols), got '2x'.",
        ),
        (
            ("5x5x3", "3"),
            {"filters": 2, "dilation": "a"},
            "--dilation must be an int or a pair like 3x5 (rows x cols), got 'a'.",
        ),
        (
            ("5x5x3", "3"),
            {"filters": 2, "padding": "full"},
            "--padding must be valid, same, N, 'ph,pw' or 'top,bottom,left,right' (non-negative ints), got 'full'.",
        ),
    ],
)
def test_shape_query_errors_name_the_flag(args, kw, message):
    _raises(lambda: shape_query(*args, **kw), message)


def test_query_ops_list():
    assert QUERY_OPS == ("conv", "maxpool", "avgpool", "convtranspose", "upsample")


# ---------------------------------------------------------------- resolve_padding
def test_resolve_padding_against_hand_rules():
    assert resolve_padding((5, 5), 3) == (0, 0, 0, 0)  # default: no padding
    assert resolve_padding((5, 5), 3, padding=1) == (1, 1, 1, 1)
    # torch 'same' pads d*(k-1): dilation 2, k 3 -> 4 = 2 + 2; k 4, d 1 -> 3 = 1 + 2 (extra after)
    assert resolve_padding((5, 5), 3, padding="same", dilation=2) == (2, 2, 2, 2)
    assert resolve_padding((5, 5), (4, 3), padding="same") == (1, 2, 1, 1)
    # tf 'same' stride 2: H 6 -> out 3, total (3-1)*2 + 3 - 6 = 1 (0 before, 1 after);
    # W 7 -> out 4, total (4-1)*2 + 3 - 7 = 2 (1, 1)
    assert resolve_padding((6, 7), 3, stride=2, padding="same", convention="tf") == (0, 1, 1, 1)


# ---------------------------------------------------------------- conv_run / pool_run against torch
def _x(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_conv_run_defaults_match_f_conv2d():
    x, w = _x(1, (2, 5, 6)), _x(2, (3, 2, 3, 2))
    r = conv_run(x, w)  # defaults: stride 1, no padding, dilation 1, groups 1, zeros, no bias, all filters
    want = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w))[0].numpy()
    assert r.output.shape == want.shape == (3, 3, 5)
    np.testing.assert_allclose(r.output, want, atol=TOL)
    np.testing.assert_allclose(r.maps, want, atol=TOL)
    assert r.trace is None
    assert r.padding == (0, 0, 0, 0)
    assert r.input_shape == (2, 5, 6) and r.kernel_shape == (3, 2, 3, 2)
    assert r.shape.output == (3, 5, None) and r.shape.stride == (1, 1)
    d = r.to_dict()
    assert set(d) == {"output", "output_shape", "padding"}
    assert d["output_shape"] == [3, 3, 5] and d["padding"] == [0, 0, 0, 0]
    np.testing.assert_allclose(np.array(d["output"]), want, atol=TOL)


def test_conv_run_geometry_bias_single_and_trace():
    # 4 input channels, 6 filters in 2 groups, stride (2, 1), padding (1, 2), dilation (1, 2), a bias
    x, w, b = _x(3, (4, 7, 8)), _x(4, (6, 2, 3, 2)), _x(5, (6,))
    geo = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    r = conv_run(x, w, b, single=True, trace_at=(1, 2), filter=4, **geo)
    full = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w), torch.from_numpy(b), **geo)[0].numpy()
    np.testing.assert_allclose(r.output, full[0], atol=TOL)  # single: filter 0's map as (Ho, Wo)
    np.testing.assert_allclose(r.maps, full, atol=TOL)
    assert r.output.shape == full.shape[1:]
    assert r.padding == (1, 1, 2, 2)
    assert r.shape.output[:2] == full.shape[1:] and r.shape.dilation == (1, 2)
    t = r.trace
    assert (t.filter, t.row, t.col) == (4, 1, 2)
    assert t.total == pytest.approx(full[4, 1, 2], abs=1e-9)
    assert t.bias == pytest.approx(b[4])
    d = r.to_dict()
    assert d["output_shape"] == list(full.shape[1:]) and d["trace"]["total"] == pytest.approx(full[4, 1, 2])
    # the default traced filter is 0
    assert conv_run(x, w, b, trace_at=(1, 2), **geo).trace.total == pytest.approx(full[0, 1, 2], abs=1e-9)


def test_conv_run_same_padding_and_padding_mode():
    x, w = _x(6, (1, 5, 5)), _x(7, (1, 1, 4, 4))
    r = conv_run(x, w, padding="same", padding_mode="reflect", trace_at=(0, 0))
    conv = nn.Conv2d(1, 1, 4, padding="same", padding_mode="reflect", bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        want = conv(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(r.output, want, atol=TOL)
    assert r.padding == (1, 2, 1, 2)  # d*(k-1) = 3: 1 before, 2 after
    assert r.trace.total == pytest.approx(want[0, 0, 0], abs=1e-9)


@pytest.mark.parametrize(
    "kind, kw, oracle",
    [
        ("max", dict(kernel=3, stride=2, padding=1, dilation=2), lambda t: F.max_pool2d(t, 3, 2, 1, dilation=2)),
        ("max", dict(kernel=2, ceil_mode=True), lambda t: F.max_pool2d(t, 2, ceil_mode=True)),
        ("max", dict(kernel=(3, 2), stride=(1, 2)), lambda t: F.max_pool2d(t, (3, 2), (1, 2))),
        ("avg", dict(kernel=3, stride=1, padding=1), lambda t: F.avg_pool2d(t, 3, 1, 1)),
        (
            "avg",
            dict(kernel=3, stride=1, padding=1, count_include_pad=False),
            lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False),
        ),
        (
            "avg",
            dict(kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        ),
    ],
)
def test_pool_run_matches_torch(kind, kw, oracle):
    x = _x(8, (2, 5, 7))
    want = oracle(torch.from_numpy(x)[None])[0].numpy()
    r = pool_run(x, kind, trace_at=(1, 2), channel=1, **kw)
    np.testing.assert_allclose(r.output, want, atol=TOL)
    np.testing.assert_allclose(r.maps, want, atol=TOL)
    assert (r.trace.channel, r.trace.row, r.trace.col) == (1, 1, 2)
    assert r.trace.value == pytest.approx(want[1, 1, 2], abs=1e-12)
    # the bottom-right window: partial under ceil_mode, overlapping the padding otherwise
    ho, wo = want.shape[1:]
    corner = pool_run(x, kind, trace_at=(ho - 1, wo - 1), channel=1, **kw).trace
    assert corner.value == pytest.approx(want[1, ho - 1, wo - 1], abs=1e-12)
    single = pool_run(x, kind, single=True, **kw)
    np.testing.assert_allclose(single.output, want[0], atol=TOL)
    assert single.trace is None


def test_pool_run_defaults_and_to_dict_exact():
    # defaults: max, kernel 2, stride = kernel, no padding, floor: 0..15 -> [[5, 7], [13, 15]]
    x = np.arange(16.0).reshape(1, 4, 4)
    r = pool_run(x)
    np.testing.assert_array_equal(r.output, F.max_pool2d(torch.from_numpy(x)[None], 2)[0].numpy())
    assert r.to_dict() == {"output": [[[5.0, 7.0], [13.0, 15.0]]], "output_shape": [1, 2, 2]}
    # 5x5 with defaults: floor((5 - 2)/2) + 1 = 2 (ceil_mode off), trace of channel 0
    x5 = np.arange(50.0).reshape(2, 5, 5)
    r5 = pool_run(x5, trace_at=(1, 0))
    assert r5.output.shape == (2, 2, 2)
    # bottom-left window of channel 0: rows 2-3, cols 0-1 -> 10, 11, 15, 16; 16 wins at [1, 1]
    assert r5.to_dict() == {
        "output": F.max_pool2d(torch.from_numpy(x5)[None], 2)[0].tolist(),
        "output_shape": [2, 2, 2],
        "trace": {
            "kind": "max",
            "channel": 0,
            "row": 1,
            "col": 0,
            "input_rows": [2, 3],
            "input_cols": [0, 1],
            "window": [[10.0, 11.0], [15.0, 16.0]],
            "padded": [[False, False], [False, False]],
            "value": 16.0,
            "argmax": [1, 1],
            "sum": None,
            "divisor": None,
        },
    }
    # avg with defaults for count_include_pad (True): the corner 3x3 window with padding 1 divides by 9
    x3 = np.arange(9.0).reshape(1, 3, 3)
    avg = pool_run(x3, "avg", 3, stride=1, padding=1, trace_at=(0, 0))
    assert avg.output[0, 0, 0] == pytest.approx(F.avg_pool2d(torch.from_numpy(x3)[None], 3, 1, 1)[0, 0, 0, 0].item())
    assert avg.to_dict()["trace"] == {
        "kind": "avg",
        "channel": 0,
        "row": 0,
        "col": 0,
        "input_rows": [-1, 0, 1],
        "input_cols": [-1, 0, 1],
        "window": [[None, None, None], [None, 0.0, 1.0], [None, 3.0, 4.0]],
        "padded": [[True, True, True], [True, False, False], [True, False, False]],
        "value": 8.0 / 9.0,  # (0 + 1 + 3 + 4) / 9
        "argmax": None,
        "sum": 8.0,
        "divisor": 9.0,
    }


# ---------------------------------------------------------------- pool_trace defaults and errors
def test_pool_trace_defaults_and_2d_input():
    x = np.arange(25.0).reshape(5, 5)  # a (H, W) input is one channel
    t = pool_trace(x, "max", 2, 1, 1)  # default stride = kernel, floor: output 2x2
    assert t.window == [[12.0, 13.0], [17.0, 18.0]] and t.value == 18.0 and t.argmax == (1, 1)
    _raises(lambda: pool_trace(x, "max", 2, 2, 0), "row must be an int in 0..1 (output is 1x2x2), got 2.")
    avg = pool_trace(np.arange(9.0).reshape(1, 3, 3), "avg", 3, 0, 0, stride=1, padding=1)
    assert avg.divisor == 9.0 and avg.sum == 8.0  # count_include_pad defaults to True


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(row=0, col=0, channel=1), "channel must be an int in 0..0 (output is 1x2x2), got 1."),
        (dict(row=2, col=0), "row must be an int in 0..1 (output is 1x2x2), got 2."),
        (dict(row=True, col=0), "row must be an int in 0..1 (output is 1x2x2), got True."),
        (dict(row=0, col=2), "col must be an int in 0..1 (output is 1x2x2), got 2."),
        (dict(row=0, col=-1), "col must be an int in 0..1 (output is 1x2x2), got -1."),
    ],
)
def test_pool_trace_errors_name_the_argument(kw, message):
    _raises(lambda: pool_trace(np.ones((1, 4, 4)), "max", 2, **kw), message)


def test_pool_trace_bad_input_names_x():
    _raises(
        lambda: pool_trace(np.ones((1, 1, 4, 4)), "max", 2, 0, 0),
        "input x must be 2-D or 3-D, got shape (1, 1, 4, 4).",
    )


# ---------------------------------------------------------------- conv2d / trace / pool2d edges
def test_conv2d_scalar_bias_and_argument_names():
    x, w = _x(9, (1, 4, 4)), _x(10, (1, 1, 2, 2))
    want = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w), torch.tensor([0.5], dtype=torch.float64))[0]
    np.testing.assert_allclose(conv2d(x, w, 0.5), want.numpy(), atol=TOL)  # a 0-D bias for one filter
    _raises(lambda: conv2d(np.ones((4, 4)), w), "input x must be 3-D or 4-D, got shape (4, 4).")
    _raises(lambda: conv2d(x, np.ones((1, 2, 2))), "weights w must be 4-D, got shape (1, 2, 2).")
    _raises(lambda: conv2d(x, w, np.ones((1, 1))), "bias must be 0-D or 1-D, got shape (1, 1).")
    _raises(lambda: conv2d(x, w, groups=0), "groups must be a positive int, got 0.")
    _raises(lambda: conv2d(x, w, groups=True), "groups must be a positive int, got True.")


def test_pad2d_default_mode_and_side_names():
    x = np.arange(9.0).reshape(1, 3, 3)
    np.testing.assert_array_equal(pad2d(x, (1, 0, 0, 2)), F.pad(torch.from_numpy(x), (0, 2, 1, 0)).numpy())
    for pads, side in (
        ((3, 0, 0, 0), "top"),
        ((0, 3, 0, 0), "bottom"),
        ((0, 0, 3, 0), "left"),
        ((0, 0, 0, 3), "right"),
    ):
        _raises(
            lambda pads=pads: pad2d(x, pads, "reflect"),
            f"reflect padding must be smaller than the input size: {side} pad 3 vs size 3; use less padding or 'replicate'.",
        )
    _raises(
        lambda: pad2d(x, (0, 0, 0, 4), "circular"),
        "circular padding may wrap at most once: right pad 4 vs size 3; use less padding.",
    )


def test_trace_one_filter_padding_marks_and_names():
    # a (C, kh, kw) filter; padding 1 on a 3x3 input: output (2, 2) reads padded rows -1 and 3 = h
    x, w = np.arange(9.0).reshape(1, 3, 3), np.ones((1, 2, 2))
    t = trace(x, w, 1, 1, padding=1, stride=2)
    assert (t.batch, t.filter, t.row, t.col) == (0, 0, 1, 1)
    assert t.input_rows == (1, 2) and t.input_cols == (1, 2)
    last = trace(x, w, 1, 1, padding=1, stride=3)  # taps at padded 3, 4 -> input rows 2, 3 (3 = h is padding)
    assert last.input_rows == (2, 3) and last.input_cols == (2, 3)
    np.testing.assert_array_equal(last.channels[0].padded, [[False, True], [True, True]])
    assert last.total == 8.0  # only x[2, 2] = 8 is inside
    want = F.conv2d(torch.from_numpy(x)[None], torch.ones(1, 1, 2, 2, dtype=torch.float64), padding=1, stride=3)
    assert last.total == want[0, 0, 1, 1].item()
    _raises(lambda: trace(x, np.ones((2, 2)), 0, 0), "weights w must be 3-D or 4-D, got shape (2, 2).")
    w4 = np.ones((1, 1, 2, 2))
    for kw, message in (
        (dict(row=0, col=0, batch=1), "batch must be an int in 0..0 (output is 1x2x2), got 1."),
        (dict(row=0, col=0, filter=1), "filter must be an int in 0..0 (output is 1x2x2), got 1."),
        (dict(row=2, col=0), "row must be an int in 0..1 (output is 1x2x2), got 2."),
        (dict(row=True, col=0), "row must be an int in 0..1 (output is 1x2x2), got True."),
        (dict(row=0, col=2), "col must be an int in 0..1 (output is 1x2x2), got 2."),
    ):
        _raises(lambda kw=kw: trace(x, w4, **kw), message)


def test_pool2d_defaults_and_padding_kinds():
    x = _x(11, (2, 5, 5))
    # defaults: max, kernel 2, stride 2, floor (2x2 output), count_include_pad
    np.testing.assert_array_equal(pool2d(x), F.max_pool2d(torch.from_numpy(x), 2).numpy())
    want = F.avg_pool2d(torch.from_numpy(x), 3, 1, 1).numpy()
    np.testing.assert_allclose(pool2d(x, "avg", 3, 1, 1), want, atol=TOL)
    _raises(lambda: pool2d(np.ones((4, 4)), "max"), "input x must be 3-D or 4-D, got shape (4, 4).")
    _raises(lambda: pool2d(x, "max", 3, 1, "1"), "pooling padding must be an int or a pair (ph, pw), got '1'.")
    _raises(
        lambda: pool2d(x, "max", 3, 1, (1, 1, 1, 1)),
        "pooling padding must be an int or a pair (ph, pw), got (1, 1, 1, 1).",
    )


def test_pool_trace_window_all_padding():
    # 1x3 input, kernel 2, dilation 2, padding 1: the row taps are -1 and 1, both outside the one row,
    # so the window reads padding only: -inf (as torch) and no winner
    x = np.ones((1, 1, 3))
    t = pool_trace(x, "max", 2, 0, 1, stride=1, padding=1, dilation=2)
    assert t.value == F.max_pool2d(torch.from_numpy(x)[None], 2, 1, 1, dilation=2)[0, 0, 0, 1].item() == -math.inf
    assert t.to_dict() == {
        "kind": "max",
        "channel": 0,
        "row": 0,
        "col": 1,
        "input_rows": [-1, 1],
        "input_cols": [0, 2],
        "window": [[None, None], [None, None]],
        "padded": [[True, True], [True, True]],
        "value": -math.inf,
        "argmax": None,
        "sum": None,
        "divisor": None,
    }


# ---------------------------------------------------------------- output_shape texts (axis labels, notes, formulas)
FLOOR_FORMULA = "out = floor((in + pad_before + pad_after - k_eff) / stride) + 1; k_eff = dilation*(kernel-1) + 1"


def test_floor_notes_name_rows_and_columns():
    # H 7, k 2, s 3: windows [0,1], [3,4]; rows 2, 5, 6 never read, the last 2 after the last window;
    # (7 - 2)/3 + 1 = 8/3. W 10: windows [0,1], [3,4], [6,7]; 2, 5, 8, 9 never read, the last 2.
    # TF 'SAME': ceil(7/3) = 3 with pad (3-1)*3 + 2 - 7 = 1; ceil(10/3) = 4 with pad 3*3 + 2 - 10 = 1
    r = output_shape((7, 10), 2, stride=3)
    assert _out_hwc(nn.Conv2d(1, 1, 2, stride=3), 7, 10, 1)[:2] == r.output[:2] == (2, 3)
    assert r.formula == FLOOR_FORMULA
    assert [a.substituted for a in r.axes] == [
        "(7 + 0 + 0 - 2) / 3 + 1 = 8/3 ~ 2.667 -> floor -> 2",
        "(10 + 0 + 0 - 2) / 3 + 1 = 11/3 ~ 3.667 -> floor -> 3",
    ]
    assert [(a.uncovered, a.uncovered_tail) for a in r.axes] == [(3, 2), (4, 2)]
    assert r.notes == (
        "H: (7 + 0 - 2)/3 + 1 = 8/3 ~ 2.667 is not a whole number of windows: window 3 would start at padded "
        "index 6 and need indices 6..7, but the padded input ends at index 6, so it is dropped (floor): 2, not 3; "
        "the last 2 input rows are never read. TensorFlow 'SAME' padding gives ceil(7/3) = 3 instead, with a total "
        "pad of 1.",
        "W: (10 + 0 - 2)/3 + 1 = 11/3 ~ 3.667 is not a whole number of windows: window 4 would start at padded "
        "index 9 and need indices 9..10, but the padded input ends at index 9, so it is dropped (floor): 3, not 4; "
        "the last 2 input columns are never read. TensorFlow 'SAME' padding gives ceil(10/3) = 4 instead, with a "
        "total pad of 1.",
    )
    # H 9: windows [0,1], [3,4], [6,7]: 2, 5, 8 never read, only 8 after the last window; (9 - 2)/3 + 1 = 10/3.
    # W 8: (8 - 2)/3 + 1 = 3 exactly, but 2 and 5 are skipped between windows
    r = output_shape((9, 8), 2, stride=3)
    assert r.notes == (
        "H: (9 + 0 - 2)/3 + 1 = 10/3 ~ 3.333 is not a whole number of windows: window 4 would start at padded "
        "index 9 and need indices 9..10, but the padded input ends at index 8, so it is dropped (floor): 3, not 4; "
        "the last input row is never read.",
        "W: 2 input columns are never read: stride 3 jumps over them between windows.",
    )
    # transposed: H 8 skips 2 rows, W 9 loses its last column
    assert output_shape((8, 9), 2, stride=3).notes == (
        "H: 2 input rows are never read: stride 3 jumps over them between windows.",
        "W: (9 + 0 - 2)/3 + 1 = 10/3 ~ 3.333 is not a whole number of windows: window 4 would start at padded "
        "index 9 and need indices 9..10, but the padded input ends at index 8, so it is dropped (floor): 3, not 4; "
        "the last input column is never read.",
    )


def test_square_axis_shape_exact_and_decimal_fractions():
    # 13, k 2, s 5: (13 - 2)/5 + 1 = 16/5 = 3.2 -> 3; windows [0,1], [5,6], [10,11]: 2, 3, 4, 7, 8, 9, 12
    # never read (7), the last one (12) after the last window
    r = output_shape(13, 2, stride=5)
    h = AxisShape(
        "H", 13, 2, 1, 2, 5, 0, 0, "16/5", 3.2, "floor", 3, "(13 + 0 + 0 - 2) / 5 + 1 = 3.2 -> floor -> 3", 7, 1
    )
    assert r.axes[0] == h and r.axes[0].dropped_last is False
    assert r.notes == (
        "H and W: (13 + 0 - 2)/5 + 1 = 3.2 is not a whole number of windows: window 4 would start at padded index 15 "
        "and need indices 15..16, but the padded input ends at index 12, so it is dropped (floor): 3, not 4; the last "
        "input row/column is never read.",
    )
    # (11 - 2)/4 + 1 = 13/4 = 3.25; (7 - 2)/5 + 1 = 2 exactly (an integer is printed as one)
    assert output_shape(11, 2, stride=4).axes[1].substituted == "(11 + 0 + 0 - 2) / 4 + 1 = 3.25 -> floor -> 3"
    assert output_shape(7, 2, stride=5).axes[0].substituted == "(7 + 0 + 0 - 2) / 5 + 1 = 2 -> floor -> 2"
    # (3 - 2)/20 + 1 = 21/20: a denominator of 2s and 5s only is a terminating decimal
    assert output_shape(3, 2, stride=20).axes[0].substituted == "(3 + 0 + 0 - 2) / 20 + 1 = 1.05 -> floor -> 1"
    # 128, k 3, s 2: 127/2 = 63.5
    assert output_shape(128, 3, stride=2).axes[0].substituted == "(128 + 0 + 0 - 3) / 2 + 1 = 63.5 -> floor -> 63"


def test_formulas_per_branch():
    keff = "k_eff = dilation*(kernel-1) + 1"
    # torch 'same' and 'valid' are floor formulas like explicit padding
    assert output_shape(5, 3, padding="same").formula == FLOOR_FORMULA
    assert output_shape(5, 3, padding="valid").formula == FLOOR_FORMULA
    assert output_shape(5, 2, op="maxpool").formula == FLOOR_FORMULA
    assert output_shape(7, 3, stride=2, padding="same", convention="tf").formula == (
        f"out = ceil(in / stride); pad_total = max((out-1)*stride + k_eff - in, 0), extra pad at bottom/right; {keff}"
    )
    assert output_shape(7, 3, stride=2, padding="VALID", convention="tf").formula == (
        f"out = ceil((in - k_eff + 1) / stride); {keff}"
    )
    ceil = output_shape(5, 2, op="maxpool", ceil_mode=True)
    assert ceil.formula == (
        "out = ceil((in + pad_before + pad_after - k_eff) / stride) + 1, minus 1 if the last window would start "
        f"in the right padding ((out-1)*stride >= in + pad_before); {keff}"
    )
    # (5 - 2)/2 + 1 = 2.5 -> ceil 3; the third window starts at 4 < 5, inside the input: kept, partial
    assert ceil.output[:2] == _out_hwc(nn.MaxPool2d(2, ceil_mode=True), 5, 5, 1)[:2] == (3, 3)
    assert ceil.notes == (
        "H and W: ceil_mode rounds 2.5 up to 3: the last window is partial and pools only the cells it covers.",
    )
    assert ceil.axes[0].dropped_last is False and ceil.axes[0].rounding == "ceil"
    assert ceil.axes[1].substituted == "(5 + 0 + 0 - 2) / 2 + 1 = 2.5 -> ceil -> 3"
    floor_pool = output_shape(5, 2, op="maxpool")
    assert floor_pool.notes == (
        "H and W: (5 + 0 - 2)/2 + 1 = 2.5 is not a whole number of windows: window 3 would start at padded index 4 "
        "and need indices 4..5, but the padded input ends at index 4, so it is dropped (floor): 2, not 3; the last "
        "input row/column is never read. TensorFlow 'SAME' padding gives ceil(5/2) = 3 instead, with a total pad of "
        "1. PyTorch pools keep a partial last window with ceil_mode=True.",
    )
    tf = output_shape((7, 5), 3, stride=2, padding="same", convention="tf")
    assert tf.notes == (
        "H: 7/2 = 3.5 is rounded up: TensorFlow 'SAME' keeps a window for every started stride and pads 2 rows "
        "(1 before, 1 after).",
        "W: 5/2 = 2.5 is rounded up: TensorFlow 'SAME' keeps a window for every started stride and pads 2 columns "
        "(1 before, 1 after).",
    )


def test_as_float_array_inputs_and_messages():
    w = np.ones((1, 1, 2, 2))
    xt = torch.arange(9.0, dtype=torch.float64).reshape(1, 3, 3).requires_grad_(True)  # a tensor with grad
    want = F.conv2d(xt.detach()[None], torch.from_numpy(w))[0].numpy()
    np.testing.assert_allclose(conv2d(xt, w), want, atol=TOL)
    _raises(
        lambda: conv2d([[["a", "b"]]], w),
        "input x must be a rectangular array of numbers, got text values (dtype <U1).",
    )
    _raises(
        lambda: conv2d([[[1.0, None]]], w),
        "input x must be a rectangular array of numbers, got ragged or non-numeric values (dtype object).",
    )
    _raises(lambda: conv2d(np.ones((1, 3, 3)) * 1j, w), "input x must be real-valued, got complex values.")


def test_tf_axis_shapes_exact_and_conv_ignores_ceil_mode():
    # SAME: H ceil(7/2) = 4, pad (4-1)*2 + 3 - 7 = 2 -> 1 + 1; W ceil(5/2) = 3, pad (3-1)*2 + 3 - 5 = 2
    same = output_shape((7, 5), 3, stride=2, padding="same", convention="tf")
    assert same.axes == (
        AxisShape(
            "H", 7, 3, 1, 3, 2, 1, 1, "7/2", 3.5, "ceil", 4,
            "ceil(7 / 2) = ceil(3.5) = 4; pad total = max((4-1)*2 + 3 - 7, 0) = 2 (before 1, after 1)", 0, 0,
        ),
        AxisShape(
            "W", 5, 3, 1, 3, 2, 1, 1, "5/2", 2.5, "ceil", 3,
            "ceil(5 / 2) = ceil(2.5) = 3; pad total = max((3-1)*2 + 3 - 5, 0) = 2 (before 1, after 1)", 0, 0,
        ),
    )  # fmt: skip
    assert output_shape(8, 3, stride=2, padding="same", convention="tf").notes == ()  # 8/2 = 4: nothing rounded
    # VALID: H ceil((7 - 3 + 1)/2) = ceil(2.5) = 3, windows [0,2], [2,4], [4,6] read every row;
    # W ceil((6 - 3 + 1)/2) = 2, windows [0,2], [2,4]: column 5 is never read
    valid = output_shape((7, 6), 3, stride=2, padding="valid", convention="tf")
    assert valid.axes == (
        AxisShape("H", 7, 3, 1, 3, 2, 0, 0, "5/2", 2.5, "ceil", 3, "ceil((7 - 3 + 1) / 2) = ceil(2.5) = 3", 0, 0),
        AxisShape("W", 6, 3, 1, 3, 2, 0, 0, "2", 2.0, "ceil", 2, "ceil((6 - 3 + 1) / 2) = ceil(2) = 2", 1, 1),
    )
    # ceil_mode is a pooling option: a convolution still rounds down ((5 - 2)/2 + 1 = 2.5 -> 2), like nn.Conv2d
    conv = output_shape(5, 2, stride=2, ceil_mode=True)
    assert conv.output[:2] == _out_hwc(nn.Conv2d(1, 1, 2, stride=2), 5, 5, 1)[:2] == (2, 2)
    assert conv.ceil_mode is False and conv.axes[0].rounding == "floor" and conv.formula == FLOOR_FORMULA
    # square layers name both axes at once
    assert output_shape(7, 3, stride=2, padding="same", convention="tf").notes == (
        "H and W: 7/2 = 3.5 is rounded up: TensorFlow 'SAME' keeps a window for every started stride and pads 2 "
        "rows/columns (1 before, 1 after).",
    )
    # 7, k 2, s 3: windows [0,1], [3,4]: rows 2, 5, 6 never read, 5 and 6 after the last window
    assert (
        output_shape(7, 2, stride=3)
        .notes[0]
        .endswith(
            "so it is dropped (floor): 2, not 3; the last 2 input rows/columns are never read. TensorFlow 'SAME' "
            "padding gives ceil(7/3) = 3 instead, with a total pad of 1."
        )
    )
    # 8, k 2, s 3: windows [0,1], [3,4], [6,7]: rows 2 and 5 are skipped
    assert output_shape(8, 2, stride=3).notes == (
        "H and W: 2 input rows/columns are never read: stride 3 jumps over them between windows.",
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(input_hw=5, kernel=3, op="pool"), "op must be one of conv, maxpool, avgpool, got 'pool'."),
        (dict(input_hw=5, kernel=3, convention="keras"), "convention must be 'torch' or 'tf', got 'keras'."),
        (dict(input_hw=0, kernel=3), "input size must be >= 1, got 0."),
        (dict(input_hw=5, kernel=0), "kernel must be >= 1, got 0."),
        (dict(input_hw=5, kernel=3, stride=0), "stride must be >= 1, got 0."),
        (dict(input_hw=5, kernel=3, stride=True), "stride must be an int or a pair of ints (h, w), got True."),
        (dict(input_hw=5, kernel=3, dilation=0), "dilation must be >= 1, got 0."),
        (dict(input_hw=5, kernel=1.5), "kernel must be an int or a pair of ints (h, w), got 1.5."),
        (dict(input_hw=5, kernel=(1, 2, 3)), "kernel must be an int or a pair of ints (h, w), got (1, 2, 3)."),
        (dict(input_hw=5, kernel=3, padding=-1), "padding must be >= 0, got -1."),
        (dict(input_hw=5, kernel=3, padding=(1, -1)), "padding must be >= 0, got (1, -1)."),
        (
            dict(input_hw=5, kernel=3, op="avgpool", dilation=2),
            "average pooling has no dilation in PyTorch; got dilation 2, use 1.",
        ),
        (
            dict(input_hw=5, kernel=3, op="maxpool", ceil_mode=True, convention="tf"),
            "ceil_mode is a PyTorch pooling option; TensorFlow uses 'SAME'/'VALID' padding instead.",
        ),
        (dict(input_hw=5, kernel=3, in_channels=0), "in_channels must be a positive int, got 0."),
        (dict(input_hw=5, kernel=3, out_channels=True), "out_channels must be a positive int, got True."),
        (
            dict(input_hw=5, kernel=3, op="maxpool", padding="same"),
            "PyTorch pooling has no 'same' padding; give an int padding or use convention 'tf'.",
        ),
        (
            dict(input_hw=5, kernel=3, op="maxpool", padding=(1, 0, 1, 1)),
            "PyTorch pooling pads symmetrically; got (top, bottom, left, right) = (1, 0, 1, 1).",
        ),
        (
            dict(input_hw=5, kernel=3, op="avgpool", padding=(1, 1, 1, 0)),
            "PyTorch pooling pads symmetrically; got (top, bottom, left, right) = (1, 1, 1, 0).",
        ),
        (
            dict(input_hw=5, kernel=3, padding="half"),
            "padding must be 'valid', 'same' or a non-negative int, got 'half'.",
        ),
        (
            dict(input_hw=5, kernel=3, padding=(1, -1, 0, 0)),
            "padding (top, bottom, left, right) must be non-negative ints, got (1, -1, 0, 0).",
        ),
        (
            dict(input_hw=5, kernel=3, padding=(1, True, 0, 0)),
            "padding (top, bottom, left, right) must be non-negative ints, got (1, True, 0, 0).",
        ),
        (
            dict(input_hw=3, kernel=5, padding="valid", convention="tf"),
            "kernel 5 (effective 5 with dilation 1) is larger than the input's 3 rows/columns; use a smaller kernel "
            "or 'SAME' padding.",
        ),
        (
            dict(input_hw=(9, 3), kernel=3, dilation=(1, 2), padding="valid", convention="tf"),
            "kernel 3 (effective 5 with dilation 2) is larger than the input's 3 columns; use a smaller kernel or "
            "'SAME' padding.",
        ),
        (
            dict(input_hw=5, kernel=3, stride=2, padding="same"),
            "padding='same' needs stride 1 in PyTorch (it rejects strided 'same' convolutions), got stride 2; use "
            "convention 'tf' or an explicit padding.",
        ),
        (
            dict(input_hw=5, kernel=3, op="maxpool", padding=2),
            "pooling padding must be at most half the kernel (PyTorch rule pad <= kernel//2 = 1), got 2 on H and W.",
        ),
        (
            dict(input_hw=(9, 4), kernel=5, dilation=2, padding=1),
            "kernel 5 (effective 9 with dilation 2) is larger than the padded input's 6 columns (4 + padding 1+1); "
            "use a smaller kernel or more padding.",
        ),
        (
            dict(input_hw=(2, 9), kernel=5, padding=1),
            "kernel 5 (effective 5 with dilation 1) is larger than the padded input's 4 rows (2 + padding 1+1); use "
            "a smaller kernel or more padding.",
        ),
        (
            dict(input_hw=1, kernel=4, op="maxpool", stride=1, ceil_mode=True),
            "kernel 4 (effective 4 with dilation 1) is larger than the padded input's 1 rows/columns (1 + padding "
            "0+0); use a smaller kernel or more padding.",
        ),
    ],
)
def test_output_shape_errors_name_the_argument(kw, message):
    _raises(lambda: output_shape(**kw), message)


def test_output_shape_padding_notations():
    # a digit string pads every side; 'SAME' is case- and space-insensitive; 4 sides as a list; (ph, pw)
    assert output_shape(5, 3, padding="2").padding == (2, 2, 2, 2)
    assert output_shape(5, 3, padding=" SAME ").padding == (1, 1, 1, 1)
    assert output_shape(5, 3, padding=[0, 1, 2, 3]).padding == (0, 1, 2, 3)
    assert output_shape(5, 3, padding=(1, 2)).padding == (1, 1, 2, 2)
    assert output_shape(5, 3, padding=np.int64(1)).output[:2] == (5, 5)
    # ceil_mode lets a window overhang: 2x2 input, k 3, s 2 -> ceil((2 - 3)/2) + 1 = 1 (torch agrees)
    r = output_shape(2, 3, op="maxpool", stride=2, ceil_mode=True)
    assert r.output[:2] == _out_hwc(nn.MaxPool2d(3, 2, ceil_mode=True), 2, 2, 1)[:2] == (1, 1)


def test_notebook_display_shows_the_derivation():
    # Jupyter renders these objects through _repr_html_: the derivation of the object itself
    assert "(128 + 0 + 0 - 3) / 2 + 1 = 63.5" in output_shape(128, 3, stride=2)._repr_html_()
    # output (1, 1) of 0..8 with a 2x2 ones filter: 4 + 5 + 7 + 8 = 24
    t = trace(np.arange(9.0).reshape(1, 3, 3), np.ones((1, 1, 2, 2)), 1, 1)
    assert "output[0][1][1] = 24 + 0 = 24" in t._repr_html_()


def test_one_pixel_input_is_read():
    # a 1x1 conv on a 1x1 map reads its only pixel: nothing uncovered (torch: the gradient reaches it)
    a = output_shape(1, 1).axes[0]
    assert (a.out, a.uncovered, a.uncovered_tail) == (1, 0, 0)
    # dilation 2, k 2 on 3: taps 0 and 2, row 1 is skipped between the taps of the single window
    d = output_shape(3, 2, dilation=2).axes[0]
    assert (d.out, d.uncovered, d.uncovered_tail) == (1, 1, 0)


def test_ceil_mode_dropped_window_texts():
    # 3, k 2, s 2, pad 1: (3 + 2 - 2)/2 + 1 = 2.5 -> ceil 3, but window 3 starts at padded index
    # (3-1)*2 = 4 >= 3 + 1, inside the right padding: PyTorch drops it -> 2
    r = output_shape(3, 2, op="maxpool", stride=2, padding=1, ceil_mode=True)
    assert r.output[:2] == _out_hwc(nn.MaxPool2d(2, 2, 1, ceil_mode=True), 3, 3, 1)[:2] == (2, 2)
    a = r.axes[0]
    assert (
        a.substituted
        == "(3 + 1 + 1 - 2) / 2 + 1 = 2.5 -> ceil -> 3 -> last window starts in the right padding, dropped -> 2"
    )
    assert a.dropped_last is True and a.rounding == "ceil"
    assert r.notes == (
        "H and W: ceil_mode rounds 2.5 up to 3, but window 3 would start at padded index 4, inside the right "
        "padding (the input ends at index 3), so PyTorch drops it: 2.",
    )


def test_floor_note_without_lost_rows():
    # 4, k 3, s 2, pad 1: (4 + 2 - 3)/2 + 1 = 2.5 -> 2; windows at padded [0,2] and [2,4] read input rows
    # 0..3, so nothing is lost (only the padding row 5), and TF 'SAME' gives ceil(4/2) = 2 as well
    r = output_shape(4, 3, stride=2, padding=1)
    assert r.output[:2] == _out_hwc(nn.Conv2d(1, 1, 3, 2, 1), 4, 4, 1)[:2] == (2, 2)
    assert r.notes == (
        "H and W: (4 + 2 - 3)/2 + 1 = 2.5 is not a whole number of windows: window 3 would start at padded index 4 "
        "and need indices 4..6, but the padded input ends at index 5, so it is dropped (floor): 2, not 3.",
    )


def test_whole_window_counts_have_no_notes():
    # (5 - 3)/1 + 1 = 3 reads every row; ceil_mode on (4 - 2)/2 + 1 = 2 has nothing to round
    assert output_shape(5, 3).notes == ()
    assert output_shape(4, 2, op="maxpool", ceil_mode=True).notes == ()


def test_dilated_derivation_states_k_eff():
    # 3x3 at dilation 2 spans 2*(3-1) + 1 = 5: (6 - 5)/1 + 1 = 2, like nn.Conv2d(dilation=2)
    r = output_shape(6, 3, dilation=2)
    assert r.output[:2] == _out_hwc(nn.Conv2d(1, 1, 3, dilation=2), 6, 6, 1)[:2] == (2, 2)
    assert r.axes[0].substituted == "k_eff = 2*(3-1) + 1 = 5; (6 + 0 + 0 - 5) / 1 + 1 = 2 -> floor -> 2"
